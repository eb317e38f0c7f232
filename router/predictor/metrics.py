"""How a length predictor is judged: Kendall's tau within batches, and calibration of quantiles.

A router only ever orders the requests waiting together, so (as Fu et al. 2024) ranking quality is
Kendall's tau inside random batches of 32, averaged, not over the whole corpus: across a corpus the
easy between-dataset differences would dominate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BATCH = 32


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties in either variable corrected); nan when one side is constant."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    denom = np.sqrt(np.sum(sx * sx) * np.sum(sy * sy))
    if denom == 0:
        return float("nan")
    return float(np.sum(sx * sy) / denom)


def batched_tau(
    score: np.ndarray, truth: np.ndarray, batch: int = BATCH, repeats: int = 20, seed: int = 0
) -> float:
    """Mean tau over random batches of `batch` (several shuffles, the last partial batch dropped)."""
    score = np.asarray(score, dtype=float)
    truth = np.asarray(truth, dtype=float)
    n = len(score)
    if n < batch:
        return kendall_tau_b(score, truth) if n >= 2 else float("nan")
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(repeats):
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            idx = order[start : start + batch]
            t = kendall_tau_b(score[idx], truth[idx])
            if not np.isnan(t):
                taus.append(t)
    return float(np.mean(taus)) if taus else float("nan")


def tau_by_group(
    score: np.ndarray, truth: np.ndarray, groups: Sequence[str], batch: int = BATCH, seed: int = 0
) -> dict[str, float]:
    """Batched tau overall (mixed batches, key 'all') and within each group (e.g. source dataset)."""
    labels = np.asarray(groups)
    out = {"all": batched_tau(score, truth, batch, seed=seed)}
    for g in sorted(set(labels.tolist())):
        mask = labels == g
        out[g] = batched_tau(score[mask], truth[mask], batch, seed=seed)
    return out


def coverage(quantile_estimate: np.ndarray, truth: np.ndarray) -> float:
    """Share of outcomes at or below a quantile estimate: a calibrated p90 scores 0.9."""
    return float(np.mean(np.asarray(truth) <= np.asarray(quantile_estimate)))
