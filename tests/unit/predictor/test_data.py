from pathlib import Path

import numpy as np
import orjson
import pytest

from flotilla.predictor_training import data


def _record(
    pid: str, split: str, sizes: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
) -> data.PromptRecord:
    return data.PromptRecord(pid, "Alpaca", "text " + pid, 5, sizes, split)


def test_split_is_by_prompt_and_stable() -> None:
    recs = [_record(f"p{i}", "validate" if i % 2 else "train") for i in range(2000)]
    parts = data.split_records(recs)
    again = data.split_records(list(reversed(recs)))
    for p in data.Part:
        assert {r.prompt_id for r in parts[p]} == {r.prompt_id for r in again[p]}
    held = parts[data.Part.HELDOUT]
    assert all(r.split == "validate" for r in held)
    assert 0.35 < len(held) / 1000 < 0.45
    assert 0.1 < len(parts[data.Part.CALIBRATE]) / (2000 - len(held)) < 0.2


def test_sampled_truth_and_ceiling_predictor() -> None:
    rec = _record("x", "train")
    one, rest = data.sampled_truth([rec] * 50, seed=3)
    assert set(one.tolist()) <= set(rec.output_sizes)
    # the other nine average to (sum - one) / 9
    np.testing.assert_allclose(rest, (sum(rec.output_sizes) - one) / 9)


def test_load_castillo(tmp_path: Path) -> None:
    row = {
        "prompt_id": "a1",
        "dataset": "Mbpp",
        "prompt_text": "Write a function",
        "input_size": 7,
        "output_sizes": [1, 2, 3],
        "split": "train",
        "extra": 1,
    }
    f = tmp_path / "m.jsonl"
    f.write_bytes(orjson.dumps(row) + b"\n\n")
    (rec,) = data.load_castillo(f)
    assert rec.output_sizes == (1, 2, 3)
    assert rec.mean_output == 2.0
    with pytest.raises(ValueError, match="unknown model"):
        data.model_path("gpt-9")
