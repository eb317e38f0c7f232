"""The serving-latency benchmark drives the router's own prediction path (numbers are not asserted)."""

from collections.abc import Sequence

import numpy as np

from flotilla.predictor_training.serving_latency import (
    arrivals,
    measure_serving_latency,
    render_serving_latency,
)
from flotilla.router.predictor.predictor import Prediction
from flotilla.router.predictor.text import PredictorInput


class Words:
    name = "words-v1"

    def predict(self, batch: Sequence[PredictorInput]) -> list[Prediction]:
        return [Prediction(float(len(r.text.split())), 10.0, 20.0) for r in batch]


def test_arrival_patterns() -> None:
    burst = arrivals("burst16", 40, np.random.default_rng(0))
    assert burst[:16] == [0.0] * 16 and burst[16] == 0.25 and burst[39] == 0.5
    poisson = arrivals("50rps", 2000, np.random.default_rng(0))
    assert np.all(np.diff(poisson) >= 0) and abs(poisson[-1] / 2000 - 1 / 50) < 0.002


def test_modes_are_compared_on_the_same_arrivals() -> None:
    feats = [PredictorInput(f"prompt number {i}", 3) for i in range(40)]
    lat = measure_serving_latency(Words(), feats, patterns=(("burst16", 32), ("400rps", 32)))
    for pattern in ("burst16", "400rps"):
        modes = lat[pattern]
        assert set(modes) == {"wait-always", "deadline", "not-needed"}
        assert modes["wait-always"]["fallback_share"] == 0.0  # every request waited for its own
        assert modes["not-needed"]["fallback_share"] == 1.0  # none waited; all landed later
        assert "late_p99_ms" in modes["not-needed"] and "late_p99_ms" not in modes["wait-always"]
        for row in modes.values():
            assert 0 <= row["added_p50_ms"] <= row["added_p99_ms"] <= row["added_max_ms"]
    table = render_serving_latency(lat, 0.005)
    assert len([line for line in table if line.startswith("| burst16 |")]) == 3
