import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from flotilla.router.predictor.batching import BatchingParams, BatchingPredictor, EmbeddingPredictor
from flotilla.router.predictor.predictor import Prediction
from flotilla.router.predictor.text import PredictorInput


class SlowPredictor:
    """Blocks its thread like the encoder does; records batch sizes and the thread it ran on."""

    def __init__(self, name: str = "slow", cost_s: float = 0.01) -> None:
        self.name = name
        self.cost_s = cost_s
        self.batches: list[int] = []
        self.threads: set[int] = set()

    def predict(self, batch: Sequence[PredictorInput]) -> list[Prediction]:
        self.threads.add(threading.get_ident())
        self.batches.append(len(batch))
        time.sleep(self.cost_s)
        return [Prediction(score=float(f.prompt_tokens), p50=1.0, p90=2.0) for f in batch]


class EmbeddingFake(SlowPredictor):
    def embed(self, batch: Sequence[PredictorInput]) -> np.ndarray:
        return np.array([[f.prompt_tokens, 1.0] for f in batch], dtype=np.float32)

    def predict_embedded(self, z: np.ndarray, max_tokens: Sequence[int | None]) -> list[Prediction]:
        self.batches.append(len(z))
        return [Prediction(float(row[0]), 1.0, 2.0) for row in z]


async def test_requests_are_micro_batched_off_the_event_loop() -> None:
    pred = SlowPredictor(cost_s=0.02)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    async with BatchingPredictor(pred, BatchingParams(max_batch=16, max_wait_s=0.005)) as bp:
        results = await asyncio.gather(*(bp.predict(PredictorInput(f"p{i}", i)) for i in range(100)))
    tick_task.cancel()
    assert [r.prediction.score for r in results] == [float(i) for i in range(100)]
    assert max(pred.batches) <= 16
    assert len(pred.batches) < 20  # batched, not one call per request
    assert threading.get_ident() not in pred.threads
    # ~7 batches x 20 ms of blocking work: the loop kept ticking meanwhile
    assert ticks > 40
    assert all(r.features is None and r.predictor == "slow" for r in results)


async def test_a_lone_request_waits_at_most_about_max_wait() -> None:
    pred = SlowPredictor(cost_s=0.0)
    async with BatchingPredictor(pred, BatchingParams(max_batch=32, max_wait_s=0.01)) as bp:
        t = time.perf_counter()
        await bp.predict(PredictorInput("x", 1))
        assert time.perf_counter() - t < 0.2
    assert pred.batches == [1]


async def test_embedding_predictors_return_features_for_the_log() -> None:
    pred = EmbeddingFake()
    assert isinstance(pred, EmbeddingPredictor)
    async with BatchingPredictor(pred) as bp:
        res = await bp.predict(PredictorInput("x", 7))
    assert res.features is not None
    assert res.features.tolist() == [7.0, 1.0]


async def test_errors_fail_the_batch_not_the_worker_and_swap_takes_effect() -> None:
    class Broken(SlowPredictor):
        def predict(self, batch: Sequence[PredictorInput]) -> list[Prediction]:
            raise RuntimeError("boom")

    async with BatchingPredictor(Broken()) as bp:
        with pytest.raises(RuntimeError, match="boom"):
            await bp.predict(PredictorInput("x", 1))
        bp.swap(SlowPredictor(name="fixed", cost_s=0))
        assert (await bp.predict(PredictorInput("x", 1))).predictor == "fixed"


async def test_not_started_and_close_cancels_waiters() -> None:
    bp = BatchingPredictor(SlowPredictor(cost_s=0.2))
    with pytest.raises(RuntimeError, match="not started"):
        await bp.predict(PredictorInput("x", 1))
    bp.start()
    first = asyncio.create_task(bp.predict(PredictorInput("a", 1)))
    await asyncio.sleep(0.05)  # first batch is running
    second = asyncio.create_task(bp.predict(PredictorInput("b", 1)))
    await asyncio.sleep(0)
    await bp.aclose()
    await asyncio.sleep(0)
    assert first.cancelled()
    assert second.cancelled()


async def test_expected_wait_counts_the_backlog_at_the_recent_time_per_request() -> None:
    pred = SlowPredictor(cost_s=0.05)
    async with BatchingPredictor(pred, BatchingParams(max_batch=1)) as bp:
        assert bp.expected_wait_s() == 0.0  # nothing scored yet: no basis to refuse waiting
        await bp.predict(PredictorInput("a", 1))
        alone = bp.expected_wait_s()
        assert alone >= 0.05
        futs = [bp.submit(PredictorInput(f"b{i}", 1)) for i in range(3)]
        assert bp.expected_wait_s() >= 4 * 0.05  # three ahead of a fourth, one worker
        await asyncio.gather(*futs)
