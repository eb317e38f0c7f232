import numpy as np
import pytest

from flotilla.router.predictor import heads, metrics


@pytest.mark.parametrize("fn", [heads.listmle_grad, heads.pairwise_grad, heads.regression_grad])
def test_gradients_match_finite_differences(fn) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    s = rng.normal(size=12)
    y = rng.normal(size=12)
    _, g = fn(s, y)
    eps = 1e-6
    for i in range(12):
        d = np.zeros(12)
        d[i] = eps
        num = (fn(s + d, y)[0] - fn(s - d, y)[0]) / (2 * eps)
        assert g[i] == pytest.approx(num, abs=1e-6)


@pytest.mark.parametrize("loss", ["listmle", "pairwise", "regression"])
def test_fit_linear_head_learns_a_ranking(loss: heads.HeadLoss) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1024, 8))
    true_w = rng.normal(size=8)
    lengths = np.exp(4 + 0.5 * z @ true_w + rng.normal(0, 0.2, 1024))
    w, b = heads.fit_linear_head(z, lengths, loss, epochs=20)
    assert metrics.batched_tau(z @ w + b, lengths) > 0.75


def test_l2_to_init_keeps_head_near_start_on_noise() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(256, 4))
    w0 = np.array([1.0, 0.0, 0.0, 0.0])
    w, _ = heads.fit_linear_head(z, rng.lognormal(4, 1, 256), init=(w0, 4.0), l2_to_init=1.0, epochs=5)
    assert np.linalg.norm(w - w0) < 0.5
