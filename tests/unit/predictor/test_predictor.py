from pathlib import Path

import numpy as np
import pytest

from flotilla.router.predictor import artifact, text
from flotilla.router.predictor.calibration import LengthCalibration
from flotilla.router.predictor.predictor import LearnedPredictor, Predictor, PromptLengthPredictor
from flotilla.router.predictor.text import PredictorInput


def test_artifacts_resolve_by_name_version_or_path(tiny_artifact: Path) -> None:
    root = tiny_artifact.parent
    assert tiny_artifact.name == "tiny-v3"
    (root / "tiny-v1").mkdir()  # an older, incomplete version is ignored
    assert artifact.resolve("tiny", root) == tiny_artifact
    assert artifact.resolve("tiny-v3", root) == tiny_artifact
    assert artifact.resolve(tiny_artifact) == tiny_artifact
    with pytest.raises(FileNotFoundError):
        artifact.resolve("nope", root)


def test_learned_predictor_scores_batches_consistently(tiny_artifact: Path) -> None:
    pred = LearnedPredictor.load(tiny_artifact)
    assert isinstance(pred, Predictor)
    assert pred.name == "tiny-v3/head-v1"
    reqs = [
        PredictorInput("Write a short story about python", 6),
        PredictorInput("explain " * 500 + "why", 501, max_tokens=64),  # truncated to head + tail
        PredictorInput("zzz unknown words", 3),
    ]
    batch = pred.predict(reqs)
    singles = [pred.predict([r])[0] for r in reqs]
    for a, b in zip(batch, singles, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)  # padding does not leak into the pool
    assert batch[1].p90 <= 64
    assert all(p.p50 <= p.p90 for p in batch)
    ids = pred.token_ids([reqs[1].text])[0]
    assert len(ids) == 16 + 2 and ids[0] == text.CLS_ID and ids[-1] == text.SEP_ID
    assert pred.predict([]) == []


def test_with_head_swaps_only_the_head(tiny_artifact: Path) -> None:
    pred = LearnedPredictor.load(tiny_artifact)
    flipped = pred.head.model_copy(update={"weights": [-w for w in pred.head.weights], "version": 2})
    other = pred.with_head(flipped)
    req = [PredictorInput("write a function", 3)]
    assert other.encoder is pred.encoder
    assert other.name.endswith("head-v2")
    assert other.predict(req)[0].score == pytest.approx(-pred.predict(req)[0].score, abs=1e-4)
    z = pred.embed(req)
    assert z.shape == (1, len(pred.head.weights))


def test_prompt_length_fallback() -> None:
    cal = LengthCalibration(centers=[0.0, 10.0], quantiles={"p50": [10.0, 1000.0], "p90": [20.0, 2000.0]})
    pred = PromptLengthPredictor(cal)
    short, long = pred.predict([PredictorInput("a", 2), PredictorInput("b", 2000, max_tokens=100)])
    assert short.score < long.score
    assert long.p90 == 100


def test_quantised_weights_round_trip() -> None:
    from flotilla.router.predictor.weights import dequantize_rows, quantize_rows

    w = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    q, s = quantize_rows(w)
    assert q.dtype == np.int8
    assert np.abs(dequantize_rows(q, s) - w).max() <= s.max() / 2 + 1e-6
