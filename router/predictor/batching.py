"""Prediction off the event loop: requests are micro-batched and scored in a small pool of threads.

The encoder costs a few ms of CPU per request; run inline it would stall every other connection of
the router. A dispatcher task takes what has queued up and hands it to `workers` threads (numpy
releases the GIL inside BLAS, the tokenizer while it encodes, so two threads use two cores): when
several requests wait, they are split evenly over the free workers (at most `max_batch` each), so a
burst is scored in parallel rather than in one long batch that every request of it waits for.
Under light load a request waits at most `max_wait_s` plus its own scoring. `submit` hands back a
future without waiting, so a caller can give up waiting (the router's deadline) and still collect
the prediction when it lands; `expected_wait_s` tells it beforehand whether waiting could pay
(the backlog ahead times the recent scoring time per request). The predictor can be swapped at
any time (a refit was accepted); batches in flight finish on the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flotilla.router.predictor.predictor import Prediction, Predictor
from flotilla.router.predictor.text import PredictorInput


@runtime_checkable
class EmbeddingPredictor(Predictor, Protocol):
    """A predictor whose head input can be logged for online refits (LearnedPredictor is one)."""

    def embed(self, batch: Sequence[PredictorInput]) -> np.ndarray: ...

    def predict_embedded(self, z: np.ndarray, max_tokens: Sequence[int | None]) -> list[Prediction]: ...


@dataclass(frozen=True, slots=True)
class Predicted:
    prediction: Prediction
    # The head's input, for the FeatureLog; None when the predictor has no embedding.
    features: np.ndarray | None
    predictor: str


class BatchingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(16, ge=1)
    # 0: no waiting for a batch to fill. The encoder's cost is per token, so batching saves little
    # CPU (~30% in batches of 32); batches still form by themselves from what queues up.
    max_wait_s: float = Field(0.0, ge=0.0)
    # Scoring threads. On this shared 2-core machine a second one did not shorten bursts and made
    # the event loop wait longer for the GIL (README.md); more may pay on a router with idle cores.
    workers: int = Field(1, ge=1, le=16)
    # BLAS threads per worker. The encoder's matrices are small: on a busy 2-core machine one thread
    # measured ~10x less CPU per request than OpenBLAS's default pool. Process-wide (a BLAS limit).
    blas_threads: int | None = Field(1, ge=1)


_Item = tuple[PredictorInput, "asyncio.Future[Predicted]"]


class BatchingPredictor:
    """`await predict(features)` (or keep `submit(features)`'s future) from any task; use as
    `async with BatchingPredictor(...) as bp`."""

    def __init__(self, predictor: Predictor, params: BatchingParams | None = None) -> None:
        self.predictor = predictor
        self.params = params or BatchingParams()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(
            max_workers=self.params.workers,
            thread_name_prefix="length-predictor",
            initializer=_limit_blas,
            initargs=(self.params.blas_threads,),
        )
        self._task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._scoring = 0  # requests in batches being scored
        self._per_request_s: float | None = None  # moving average of wall time per request
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
        for batch in list(self._batches):
            batch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batch
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.cancel()
        self._executor.shutdown(wait=True)

    def swap(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def submit(self, features: PredictorInput) -> asyncio.Future[Predicted]:
        """Queue one request; the future resolves when its batch is scored (or fails with it)."""
        if self._task is None:
            raise RuntimeError("BatchingPredictor is not started")
        fut: asyncio.Future[Predicted] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((features, fut))
        return fut

    async def predict(self, features: PredictorInput) -> Predicted:
        return await self.submit(features)

    def expected_wait_s(self) -> float:
        """Roughly how long a request submitted now waits for its prediction: the requests ahead
        of it (queued or being scored) shared over the workers, plus its own, at the recent wall
        time per request (batched, on a loaded machine). 0 before anything was scored."""
        if self._per_request_s is None:
            return 0.0
        ahead = self._queue.qsize() + self._scoring
        return (ahead // self.params.workers + 1) * self._per_request_s

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        free = asyncio.Semaphore(self.params.workers)
        busy = 0

        def finished(task: asyncio.Task[None]) -> None:
            nonlocal busy
            busy -= 1
            free.release()
            self._batches.discard(task)

        while True:
            batch = [await self._queue.get()]
            await free.acquire()  # requests keep queueing while every worker is busy
            deadline = loop.time() + self.params.max_wait_s
            # An even share of what waits for each free worker: a burst is scored in parallel.
            share = min(
                self.params.max_batch,
                math.ceil((1 + self._queue.qsize()) / (self.params.workers - busy)),
            )
            while len(batch) < share:
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
                free.release()
                continue
            busy += 1
            task = loop.create_task(self._score(live), name="length-predictor-batch")
            self._batches.add(task)
            task.add_done_callback(finished)

    async def _score(self, live: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        self._scoring += len(live)
        start = loop.time()
        try:
            results = await loop.run_in_executor(self._executor, _score, self.predictor, [f for f, _ in live])
        except asyncio.CancelledError:
            for _, fut in live:
                fut.cancel()
            raise
        except Exception as err:  # a broken batch fails its callers, not the worker
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(err)
            return
        finally:
            self._scoring -= len(live)
        per_request = (loop.time() - start) / len(live)
        prev = self._per_request_s
        self._per_request_s = per_request if prev is None else prev + 0.2 * (per_request - prev)
        self.batches += 1
        for (_, fut), res in zip(live, results, strict=True):
            if not fut.done():
                fut.set_result(res)


def _score(predictor: Predictor, batch: list[PredictorInput]) -> list[Predicted]:
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
