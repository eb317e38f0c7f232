"""The shipped artifacts reproduce, served by numpy, the scores torch gave at training time."""

import importlib.util
import os

import pytest

from flotilla.router.predictor import artifact
from flotilla.router.predictor.predictor import LearnedPredictor
from flotilla.router.predictor.text import PredictorInput


def require(module: str) -> None:
    """Skip without the optional runtime, except in CI (where `make test` installs it)."""
    if importlib.util.find_spec(module) is None and not os.environ.get("CI"):
        pytest.skip(f"{module} not installed (pip install -e '.[predictor]')")


SHIPPED = sorted(p for p in artifact.ARTIFACTS_DIR.glob("*-v*") if (p / "manifest.json").is_file())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_artifact_matches_its_training_scores(path) -> None:  # type: ignore[no-untyped-def]
    require("tokenizers")
    pred = LearnedPredictor.load(path)
    cases = pred.artifact.manifest.selftest
    assert cases, "artifact has no self-test cases"
    got = pred.predict([PredictorInput(c.text, c.prompt_tokens) for c in cases])
    for case, p in zip(cases, got, strict=True):
        assert p.score == pytest.approx(case.score, abs=2e-3)
        assert 0 < p.p50 <= p.p90


def test_both_models_ship_a_predictor() -> None:
    models = {artifact.Artifact(p).manifest.model for p in SHIPPED}
    if not SHIPPED:
        pytest.skip("no artifacts trained yet")
    assert {"llama-3.1-8b", "mistral-7b"} <= models
