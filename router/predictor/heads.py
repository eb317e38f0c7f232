"""Linear ranking heads trained in numpy: what online refits retrain without torch.

The encoder is fixed once shipped; the router logs each request's pooled embedding and cheap
features next to its real output length, and a head over those vectors is cheap to refit on the
fleet's own traffic. Three losses, as compared offline: ListMLE (listwise, Xia et al. 2008), a
RankNet-style pairwise logistic loss, and least squares on log length.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

HeadLoss = Literal["listmle", "pairwise", "regression"]


def listmle_grad(s: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss and d loss / d s for one list; the true order puts the largest y first."""
    order = np.argsort(-y, kind="stable")
    ss = s[order]
    e = np.exp(ss - ss.max())
    tails = np.cumsum(e[::-1])[::-1]
    loss = float(np.mean(np.log(tails) + ss.max() - ss))
    g_sorted = e * np.cumsum(1.0 / tails) - 1.0
    g = np.empty_like(s)
    g[order] = g_sorted
    return loss, g / len(s)


def pairwise_grad(s: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    sign = np.sign(y[:, None] - y[None, :])
    diff = s[:, None] - s[None, :]
    valid = sign != 0
    n = max(int(valid.sum()), 1)
    z = -sign * diff
    loss = float(np.sum(np.logaddexp(0.0, z)[valid]) / n)
    sig = np.where(valid, 1.0 / (1.0 + np.exp(-z)), 0.0) * -sign
    g = (sig.sum(1) - sig.sum(0)) / n
    return loss, g


def regression_grad(s: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    r = s - y
    return float(np.mean(r**2)), 2.0 * r / len(s)


_GRADS = {"listmle": listmle_grad, "pairwise": pairwise_grad, "regression": regression_grad}


def fit_linear_head(
    z: np.ndarray,
    lengths: np.ndarray,
    loss: HeadLoss = "listmle",
    *,
    init: tuple[np.ndarray, float] | None = None,
    epochs: int = 30,
    batch: int = 32,
    lr: float = 1e-2,
    l2_to_init: float = 1e-3,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Adam over random lists of `batch`; targets are log lengths. Warm-starts from `init` and is
    pulled towards it (L2), so a refit on little traffic moves the head only as far as the data
    supports."""
    z = np.asarray(z, dtype=np.float64)
    y = np.log(np.maximum(np.asarray(lengths, dtype=np.float64), 1.0))
    n, d = z.shape
    w0 = np.zeros(d) if init is None else np.asarray(init[0], dtype=np.float64)
    b0 = float(np.mean(y)) if init is None else float(init[1])
    theta0 = np.append(w0, b0)
    theta = theta0.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    rng = np.random.default_rng(seed)
    grad_fn = _GRADS[loss]
    step = 0
    bsz = min(batch, n)
    for _ in range(epochs):
        perm = rng.permutation(n)
        for start in range(0, n - bsz + 1, bsz):
            idx = perm[start : start + bsz]
            s = z[idx] @ theta[:-1] + theta[-1]
            _, gs = grad_fn(s, y[idx])
            grad = np.append(z[idx].T @ gs, gs.sum()) + l2_to_init * (theta - theta0)
            step += 1
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad**2
            theta -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return theta[:-1], float(theta[-1])
