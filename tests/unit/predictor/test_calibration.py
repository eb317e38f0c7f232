import numpy as np
import pytest

from flotilla.router.predictor import metrics
from flotilla.router.predictor.calibration import LengthCalibration


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, list[list[int]]]:
    rng = np.random.default_rng(seed)
    mu = rng.normal(5, 1, n)
    lengths = [np.maximum(1, np.exp(m + rng.normal(0, 0.4, 10))).astype(int).tolist() for m in mu]
    return mu + rng.normal(0, 0.3, n), lengths


def test_quantiles_are_calibrated_on_fresh_data() -> None:
    s_fit, l_fit = _synthetic(2000, 0)
    cal = LengthCalibration.fit(s_fit, l_fit, n_bins=10)
    s, lengths = _synthetic(2000, 1)
    truth = np.array([x[0] for x in lengths])
    q = cal.predict(s)
    assert metrics.coverage(q["p50"], truth) == pytest.approx(0.5, abs=0.05)
    assert metrics.coverage(q["p90"], truth) == pytest.approx(0.9, abs=0.04)


def test_quantiles_monotone_and_capped() -> None:
    s, lengths = _synthetic(500, 2)
    cal = LengthCalibration.fit(s, lengths)
    for values in cal.quantiles.values():
        assert values == sorted(values)
    grid = np.linspace(0, 10, 50)
    q = cal.predict(grid)
    assert np.all(np.diff(q["p50"]) >= 0)
    assert np.all(q["p90"] >= q["p50"])
    capped = cal.predict(grid, max_tokens=np.full(50, 100))
    assert capped["p90"].max() <= 100
    uncapped = cal.predict(grid, max_tokens=np.zeros(50))
    np.testing.assert_allclose(uncapped["p90"], q["p90"])


def test_needs_enough_points() -> None:
    with pytest.raises(ValueError, match="at least"):
        LengthCalibration.fit(np.arange(3.0), [[1], [2], [3]])
