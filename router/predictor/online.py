"""The in-router refit loop: every so often, refit the head on the model's logged traffic and swap
it in if it was accepted. The refit runs in a worker thread (it is seconds of numpy), the swap is
one attribute assignment, so requests never wait for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from flotilla.router.predictor.batching import BatchingPredictor
from flotilla.router.predictor.feature_log import FeatureLog
from flotilla.router.predictor.predictor import LearnedPredictor
from flotilla.router.predictor.refit import RefitOutcome, RefitParams, refit


class OnlineRefitter:
    def __init__(
        self,
        batcher: BatchingPredictor,
        log: FeatureLog,
        model: str,
        params: RefitParams | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.batcher = batcher
        self.log = log
        self.model = model
        self.params = params or RefitParams()
        self._sleep = sleep
        self.outcomes: list[RefitOutcome] = []

    async def run_once(self) -> RefitOutcome:
        current = self.batcher.predictor
        if not isinstance(current, LearnedPredictor):
            raise TypeError("online refits need a LearnedPredictor (its head is what is refitted)")
        snapshot = self.log.snapshot(self.model)
        outcome = await asyncio.to_thread(refit, current.head, snapshot, self.params)
        if outcome.accepted:
            self.batcher.swap(current.with_head(outcome.head))
        self.outcomes.append(outcome)
        return outcome

    async def run(self, interval_s: float) -> None:
        while True:
            await self._sleep(interval_s)
            await self.run_once()
