import numpy as np

from flotilla.router.predictor.artifact import HeadSpec
from flotilla.router.predictor.calibration import LengthCalibration
from flotilla.router.predictor.feature_log import LogSnapshot
from flotilla.router.predictor.refit import RefitParams, refit


def _traffic(n: int, w: np.ndarray, seed: int) -> LogSnapshot:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(w))).astype(np.float32)
    lengths = np.maximum(1, np.exp(5 + 0.6 * z @ w + rng.normal(0, 0.3, n))).astype(np.int64)
    return LogSnapshot(z, lengths, np.arange(n, dtype=float))


def _head(w: np.ndarray) -> HeadSpec:
    cal = LengthCalibration(centers=[-1.0, 1.0], quantiles={"p50": [100.0, 200.0], "p90": [300.0, 400.0]})
    return HeadSpec(kind="listmle", weights=w.tolist(), bias=0.0, calibration=cal)


def test_a_better_head_is_accepted_recalibrated_and_versioned() -> None:
    true_w = np.array([1.0, -1.0, 0.5, 0.0])
    stale = _head(np.array([0.0, 0.0, 0.0, 1.0]))  # traffic moved: the old head ranks noise
    out = refit(stale, _traffic(2000, true_w, 0))
    assert out.accepted
    assert out.new_tau is not None and out.old_tau is not None
    assert out.new_tau > out.old_tau + 0.3
    assert out.head.version == 2
    assert out.head.calibration.quantiles["p50"][0] < out.head.calibration.quantiles["p90"][-1]


def test_a_worse_head_is_rejected() -> None:
    true_w = np.array([1.0, -1.0, 0.5, 0.0])
    good = _head(true_w * 3)
    # fit part is pure noise, the recent held-out part follows the good head's ranking
    noise = _traffic(1500, np.zeros(4), 1)
    recent = _traffic(500, true_w, 2)
    mixed = type(noise)(
        np.concatenate([noise.features, recent.features]),
        np.concatenate([noise.output_tokens, recent.output_tokens]),
        np.arange(2000, dtype=float),
    )
    out = refit(good, mixed, RefitParams(holdout_fraction=0.25, epochs=40))
    assert not out.accepted
    assert out.head is good


def test_too_little_traffic_keeps_the_current_head() -> None:
    head = _head(np.ones(4))
    out = refit(head, _traffic(100, np.ones(4), 0))
    assert not out.accepted
    assert "too little" in out.reason
