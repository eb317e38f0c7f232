from pathlib import Path

import numpy as np
import pytest

from flotilla.router.predictor.feature_log import FeatureLog


def test_ring_per_model_orders_by_finish_time_and_round_trips(tmp_path: Path) -> None:
    log = FeatureLog(capacity_per_model=3)
    for i in range(5):
        log.record("llama", np.full(4, i), output_tokens=10 * i, finished_at=float(10 - i))
    log.record("mistral", np.ones(4), output_tokens=1, finished_at=0.0)
    snap = log.snapshot("llama")
    assert len(snap) == 3  # the two oldest records fell out
    assert snap.output_tokens.tolist() == [40, 30, 20]  # sorted by finish time
    assert snap.finished_at.tolist() == [6.0, 7.0, 8.0]
    assert log.models() == ["llama", "mistral"]
    assert len(log) == 4
    log.save(tmp_path / "log.npz")
    back = FeatureLog.load(tmp_path / "log.npz")
    np.testing.assert_array_equal(back.snapshot("llama").features, snap.features)
    assert back.snapshot("mistral").output_tokens.tolist() == [1]
    assert len(back.snapshot("other")) == 0
    with pytest.raises(ValueError):
        log.record("llama", np.ones(4), output_tokens=-1, finished_at=0.0)
