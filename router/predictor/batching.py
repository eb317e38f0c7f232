"""Prediction off the event loop: requests are micro-batched and scored in one worker thread.

The encoder costs a few ms of CPU per request; run inline it would stall every other connection of
the router. One worker thread (numpy releases the GIL inside BLAS) takes whatever has queued up,
at most `max_batch`, optionally waiting `max_wait_s` for a batch to fill once the first request is
in; under light load a request therefore waits at most max_wait_s plus its own scoring. The predictor
can be swapped at any time (a refit was accepted); batches in flight finish on the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flotilla.router.predictor.predictor import Prediction, Predictor
from flotilla.router.predictor.text import RequestFeatures


@runtime_checkable
class EmbeddingPredictor(Predictor, Protocol):
    """A predictor whose head input can be logged for online refits (LearnedPredictor is one)."""

    def embed(self, batch: Sequence[RequestFeatures]) -> np.ndarray: ...

    def predict_embedded(self, z: np.ndarray, max_tokens: Sequence[int | None]) -> list[Prediction]: ...


@dataclass(frozen=True, slots=True)
class Predicted:
    prediction: Prediction
    # The head's input, for the FeatureLog; None when the predictor has no embedding.
    features: np.ndarray | None
    predictor: str


class BatchingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(8, ge=1)
    # 0: no waiting for a batch to fill. The encoder's cost is per token, so batching saves little
    # CPU; batches still form by themselves from what queues up while the worker is busy.
    max_wait_s: float = Field(0.0, ge=0.0)
    # BLAS threads for the encoder. Its matrices are small: on a busy 2-core machine one thread
    # measured ~10x less CPU per request than OpenBLAS's default pool. Process-wide (a BLAS limit).
    blas_threads: int | None = Field(1, ge=1)


_Item = tuple[RequestFeatures, "asyncio.Future[Predicted]"]


class BatchingPredictor:
    """`await predict(features)` from any task; use as `async with BatchingPredictor(...) as bp`."""

    def __init__(self, predictor: Predictor, params: BatchingParams | None = None) -> None:
        self.predictor = predictor
        self.params = params or BatchingParams()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="length-predictor",
            initializer=_limit_blas,
            initargs=(self.params.blas_threads,),
        )
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def __aenter__(self) -> BatchingPredictor:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="length-predictor")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.cancel()
        self._executor.shutdown(wait=True)

    def swap(self, predictor: Predictor) -> None:
        self.predictor = predictor

    async def predict(self, features: RequestFeatures) -> Predicted:
        if self._task is None:
            raise RuntimeError("BatchingPredictor is not started")
        fut: asyncio.Future[Predicted] = asyncio.get_running_loop().create_future()
        await self._queue.put((features, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.params.max_wait_s
            while len(batch) < self.params.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(f, fut) for f, fut in batch if not fut.done()]
            if not live:
                continue
            predictor = self.predictor
            try:
                results = await loop.run_in_executor(self._executor, _score, predictor, [f for f, _ in live])
            except asyncio.CancelledError:
                for _, fut in live:
                    fut.cancel()
                raise
            except Exception as err:  # a broken batch fails its callers, not the worker
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            self.batches += 1
            for (_, fut), res in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(res)


def _score(predictor: Predictor, batch: list[RequestFeatures]) -> list[Predicted]:
    if isinstance(predictor, EmbeddingPredictor):
        z = predictor.embed(batch)
        preds = predictor.predict_embedded(z, [f.max_tokens for f in batch])
        return [Predicted(p, z[i], predictor.name) for i, p in enumerate(preds)]
    return [Predicted(p, None, predictor.name) for p in predictor.predict(batch)]


def _limit_blas(threads: int | None) -> None:
    if threads is None:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its default pool
        return
    threadpool_limits(limits=threads, user_api="blas")
