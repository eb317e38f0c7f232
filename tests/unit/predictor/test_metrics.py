import numpy as np
import pytest

from flotilla.router.predictor import metrics


def test_tau_b_known_values() -> None:
    x = np.array([1, 2, 3, 4])
    assert metrics.kendall_tau_b(x, x) == pytest.approx(1.0)
    assert metrics.kendall_tau_b(x, -x) == pytest.approx(-1.0)
    # one discordant pair of six
    assert metrics.kendall_tau_b(x, np.array([1, 3, 2, 4])) == pytest.approx(4 / 6)


def test_tau_b_corrects_for_ties() -> None:
    # x has one tied pair: n0=6, n1=1; y no ties; concordant 5, discordant 0
    x = np.array([1, 1, 2, 3])
    y = np.array([1, 2, 3, 4])
    assert metrics.kendall_tau_b(x, y) == pytest.approx(5 / np.sqrt(5 * 6))
    assert np.isnan(metrics.kendall_tau_b(np.ones(4), y))


def test_batched_tau_of_noisy_ranking_is_between_noise_and_perfect() -> None:
    rng = np.random.default_rng(0)
    truth = rng.lognormal(5, 1, size=640)
    assert metrics.batched_tau(truth, truth) == pytest.approx(1.0)
    noisy = metrics.batched_tau(np.log(truth) + rng.normal(0, 1, 640), truth)
    assert 0.3 < noisy < 0.8
    assert abs(metrics.batched_tau(rng.normal(size=640), truth)) < 0.1


def test_tau_by_group_batches_within_groups() -> None:
    # Within each group the score ranks perfectly; across groups it is reversed.
    score = np.r_[np.arange(64.0), np.arange(64.0) - 1000]
    truth = np.r_[np.arange(64.0), np.arange(64.0) + 1000]
    out = metrics.tau_by_group(score, truth, ["a"] * 64 + ["b"] * 64)
    assert out["a"] == pytest.approx(1.0)
    assert out["b"] == pytest.approx(1.0)
    assert out["all"] < 0.6


def test_coverage() -> None:
    assert metrics.coverage(np.array([1, 2, 3, 4]), np.array([0, 5, 3, 4])) == 0.75
