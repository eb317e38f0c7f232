from pathlib import Path

import numpy as np
import pytest

from flotilla.router.predictor.batching import BatchingPredictor
from flotilla.router.predictor.calibration import LengthCalibration
from flotilla.router.predictor.feature_log import FeatureLog
from flotilla.router.predictor.online import OnlineRefitter
from flotilla.router.predictor.predictor import LearnedPredictor, PromptLengthPredictor
from flotilla.router.predictor.text import PredictorInput

WORDS = ["write", "a", "function", "explain", "the", "list", "python", "code", "short", "story", "why", "how"]


async def test_served_traffic_is_logged_refitted_and_the_new_head_swapped_in(tiny_artifact: Path) -> None:
    pred = LearnedPredictor.load(tiny_artifact)
    rng = np.random.default_rng(0)
    log = FeatureLog()
    async with BatchingPredictor(pred) as bp:
        reqs = [PredictorInput(" ".join(rng.choice(WORDS, int(rng.integers(2, 12)))), 5) for _ in range(520)]
        served = [await bp.predict(r) for r in reqs[:40]]  # a few through the real path
        z = np.concatenate(
            [np.stack([s.features for s in served if s.features is not None]), pred.embed(reqs[40:])]
        )
        direction = rng.normal(size=z.shape[1])
        proj = z @ direction
        lengths = np.exp(5 + 2 * (proj - proj.mean()) / proj.std())
        for i in range(len(reqs)):
            log.record("m", z[i], int(lengths[i]), finished_at=float(i))
        refitter = OnlineRefitter(bp, log, "m")
        outcome = await refitter.run_once()
        assert outcome.accepted, outcome.reason
        assert bp.predictor is not pred
        assert bp.predictor.name.endswith("head-v2")
        after = await bp.predict(reqs[0])
        assert after.predictor.endswith("head-v2")


async def test_run_loop_uses_the_sleep_seam_and_needs_a_learned_predictor() -> None:
    cal = LengthCalibration(centers=[0.0, 1.0], quantiles={"p50": [1.0, 2.0], "p90": [2.0, 3.0]})
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    async with BatchingPredictor(PromptLengthPredictor(cal)) as bp:
        refitter = OnlineRefitter(bp, FeatureLog(), "m", sleep=fake_sleep)
        with pytest.raises(TypeError):
            await refitter.run(interval_s=60.0)
    assert slept == [60.0]
