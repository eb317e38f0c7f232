"""Serving the learned length predictors: one per model, named by its fleet, proxy until loaded.

Each model's fleet names an artifact (`spec.router.predictor.name`; `models.<m>.predictor` in a
static config). The service loads it in a worker thread when discovery first reports it, wraps it in
a `BatchingPredictor` (inference batched in a small thread pool off the event loop) and from then on
answers that model's requests with the artifact's calibrated p50. Until then, or when loading fails
(no artifact, a missing runtime such as `tokenizers`), the model is served by `ProxyPredictor` and
the reason is logged once: the router always starts.

A request never waits long for its prediction. The encoder costs 3-5 ms of CPU, so a burst of 16
requests on two cores takes 25-80 ms to score: waiting for all of them would add that to every
request. Instead a request waits only while the prediction can change where it goes (`matters`:
it would be dispatched now, by a policy or KV check that reads the prediction), and then at most
`deadline_s`; otherwise it proceeds at once with a fallback estimate (the model's recent mean
prediction) and `Estimate.late` resolves with the learned one when it lands, for admission to
re-key the waiting request or correct its instance's accounting. Identical prompts (retries,
repeated evaluation prompts) are scored once: results and in-flight predictions are cached by a
hash of the prompt. Finished requests come back through `observe`: the ratio of predicted to actual
length and a rolling Kendall's tau are exported (`flotilla_router_predictor_*`), and (features,
actual length) go to the feature log that refits learn from.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies.base import RequestFeatures
from flotilla.router.prediction import Estimate, ProxyPredictor
from flotilla.router.predictor.metrics import kendall_tau_b

if TYPE_CHECKING:
    from flotilla.router.predictor import BatchingPredictor, FeatureLog, Predicted, Predictor

log = logging.getLogger("flotilla.router.predictor")

Loader = Callable[[str], "Predictor"]
Matters = Callable[[RequestFeatures], bool]
"""Whether a request's prediction can change its dispatch right now (see `Admission`)."""
TAU_WINDOW = 128
TAU_EVERY = 16
# Weight of each new prediction in the model's running mean (the fallback estimate): ~the last 50.
MEAN_WEIGHT = 0.02


def default_loader(root: str | None) -> Loader:
    def load(ref: str) -> Predictor:
        from flotilla.router.predictor import LearnedPredictor
        from flotilla.router.predictor.artifact import ARTIFACTS_DIR

        return LearnedPredictor.load(ref, Path(root) if root else ARTIFACTS_DIR)

    return load


_CacheKey = tuple[bytes, int, int | None]


@dataclass(eq=False)
class _Slot:
    ref: str
    batcher: BatchingPredictor | None = None
    error: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Prompt hash -> its prediction, done or in flight (LRU): one scoring per distinct prompt.
    cache: OrderedDict[_CacheKey, asyncio.Future[Predicted]] = field(default_factory=OrderedDict)
    mean: float | None = None


class PredictorService:
    """A `LengthPredictor` over per-model learned predictors, with the proxy as fallback."""

    def __init__(
        self,
        metrics: RouterMetrics,
        *,
        loader: Loader,
        batching: Mapping[str, Any] | None = None,
        log_capacity: int = 50_000,
        refit_interval_s: float | None = None,
        fallback: ProxyPredictor | None = None,
        deadline_s: float = 0.005,
        matters: Matters | None = None,
        cache_entries: int = 2048,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`deadline_s`: the longest a request waits for its learned prediction when it `matters`
        (None: every request waits up to the deadline); `cache_entries`: prompts remembered."""
        self._deadline = deadline_s
        self._matters = matters
        self._cache_entries = cache_entries
        self._metrics = metrics
        self._loader = loader
        self._batching = dict(batching or {})
        self._refit_interval = refit_interval_s
        self._fallback = fallback or ProxyPredictor()
        self._clock = clock
        self._log_capacity = log_capacity
        self._feature_log: FeatureLog | None = None
        self._slots: dict[str, _Slot] = {}
        self._recent: dict[str, deque[tuple[float, int]]] = {}
        self._seen: dict[str, int] = {}

    @property
    def feature_log(self) -> FeatureLog | None:
        return self._feature_log

    def state(self, model: str) -> str:
        """`proxy` (none named), `loading`, `failed: <why>` or the predictor's name."""
        slot = self._slots.get(model)
        if slot is None:
            return "proxy"
        if slot.error is not None:
            return f"failed: {slot.error}"
        return "loading" if slot.batcher is None else slot.batcher.predictor.name

    async def ready(self, model: str) -> str:
        """Wait until the model's predictor has loaded or failed; its `state`."""
        slot = self._slots.get(model)
        if slot is not None and slot.tasks:
            await asyncio.wait(slot.tasks[:1])  # the load task
        return self.state(model)

    def want(self, refs: Mapping[str, str | None]) -> None:
        """Discovery's model -> predictor names: load what is new or changed (a task per model)."""
        for model, ref in refs.items():
            slot = self._slots.get(model)
            if slot is not None and slot.ref == ref:
                continue
            if slot is not None:
                self._drop(model, slot)
            if ref is None:
                continue
            slot = self._slots[model] = _Slot(ref)
            slot.tasks.append(asyncio.create_task(self._load(model, slot), name=f"predictor-load-{model}"))

    async def _load(self, model: str, slot: _Slot) -> None:
        try:
            from flotilla.router.predictor import BatchingParams, BatchingPredictor, FeatureLog

            predictor = await asyncio.to_thread(self._loader, slot.ref)
            batcher = BatchingPredictor(predictor, BatchingParams.model_validate(self._batching))
            batcher.start()
        except Exception as e:  # any failure (ImportError included) leaves the proxy in charge
            slot.error = f"{type(e).__name__}: {e}"
            log.warning(
                "length predictor not loaded, using the prompt-length proxy",
                extra={"model": model, "predictor": slot.ref, "error": slot.error},
            )
            self._metrics.predictor_in_use.labels(model, "proxy").set(1)
            return
        if self._slots.get(model) is not slot:  # replaced while loading
            await batcher.aclose()
            return
        if self._feature_log is None:
            self._feature_log = FeatureLog(self._log_capacity)
        slot.batcher = batcher
        self._metrics.predictor_in_use.labels(model, "proxy").set(0)
        self._metrics.predictor_in_use.labels(model, slot.ref).set(1)
        log.info("length predictor loaded", extra={"model": model, "predictor": predictor.name})
        if self._refit_interval is not None:
            slot.tasks.append(asyncio.create_task(self._refit_loop(model, slot), name=f"refit-{model}"))

    async def _refit_loop(self, model: str, slot: _Slot) -> None:
        from flotilla.router.predictor import LearnedPredictor, OnlineRefitter

        assert slot.batcher is not None and self._feature_log is not None and self._refit_interval
        if not isinstance(slot.batcher.predictor, LearnedPredictor):
            return
        refitter = OnlineRefitter(slot.batcher, self._feature_log, model)
        while True:
            await asyncio.sleep(self._refit_interval)
            try:
                outcome = await refitter.run_once()
            except Exception as e:  # a failed refit keeps the current head
                log.warning("predictor refit failed", extra={"model": model, "error": repr(e)})
                continue
            log.info(
                "predictor refit",
                extra={"model": model, "accepted": outcome.accepted, "reason": outcome.reason},
            )

    def _drop(self, model: str, slot: _Slot) -> None:
        for task in slot.tasks:
            task.cancel()
        if slot.batcher is not None:
            batcher = slot.batcher
            asyncio.get_running_loop().create_task(batcher.aclose())
            self._metrics.predictor_in_use.labels(model, slot.ref).set(0)
        del self._slots[model]

    async def aclose(self) -> None:
        for slot in self._slots.values():
            for task in slot.tasks:
                task.cancel()
            for task in slot.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if slot.batcher is not None:
                await slot.batcher.aclose()
        self._slots.clear()

    async def estimate(self, request: RequestFeatures, text: str) -> Estimate:
        slot = self._slots.get(request.model)
        if slot is None or slot.batcher is None:
            return await self._fallback.estimate(request, text)
        start = self._clock()
        wait = self._worth_waiting(slot.batcher, request)  # judged on the backlog ahead of it
        try:
            fut = self._submit(slot, slot.batcher, request, text)
        except Exception as e:  # e.g. closing: this request falls back, the next one tries again
            return await self._failed(request, text, e)
        if wait and not fut.done():
            await asyncio.wait([fut], timeout=self._deadline)
        self._metrics.predictor_seconds.labels(request.model).observe(self._clock() - start)
        if fut.done():
            error = asyncio.CancelledError() if fut.cancelled() else fut.exception()
            if error is not None:
                return await self._failed(request, text, error)
            return self._learned(slot, request, fut.result())
        # Not in time (or not needed now): go on with the fallback; the learned one follows.
        late: asyncio.Future[Estimate] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: self._land(slot, request, f, late))
        self._metrics.predictor_fallbacks.labels(request.model).inc()
        return Estimate(self._mean_guess(slot, request), "fallback", late=late)

    def _worth_waiting(self, batcher: BatchingPredictor, request: RequestFeatures) -> bool:
        """The prediction could change the dispatch, and could land within the deadline: waiting
        behind a backlog (a burst, a loaded machine) would only end in the fallback, later."""
        if self._matters is not None and not self._matters(request):
            return False
        return batcher.expected_wait_s() <= self._deadline

    def _submit(
        self, slot: _Slot, batcher: BatchingPredictor, request: RequestFeatures, text: str
    ) -> asyncio.Future[Predicted]:
        from flotilla.router.predictor import PredictorInput

        key = (
            hashlib.blake2b(text.encode(), digest_size=16).digest(),
            request.prompt_tokens,
            request.max_tokens,
        )
        fut = slot.cache.get(key)
        if fut is not None and not (
            fut.done()
            and (
                fut.cancelled()
                or fut.exception() is not None
                or fut.result().predictor != batcher.predictor.name
            )
        ):
            slot.cache.move_to_end(key)
            return fut
        fut = batcher.submit(PredictorInput(text, request.prompt_tokens, request.max_tokens))
        slot.cache[key] = fut
        if len(slot.cache) > self._cache_entries:
            slot.cache.popitem(last=False)
        return fut

    def _learned(self, slot: _Slot, request: RequestFeatures, got: Predicted) -> Estimate:
        tokens = max(1.0, got.prediction.p50)
        slot.mean = tokens if slot.mean is None else slot.mean + MEAN_WEIGHT * (tokens - slot.mean)
        return Estimate(tokens, got.predictor, got.features)

    def _land(
        self,
        slot: _Slot,
        request: RequestFeatures,
        fut: asyncio.Future[Predicted],
        late: asyncio.Future[Estimate],
    ) -> None:
        if late.done():
            return
        if fut.cancelled() or fut.exception() is not None:
            late.cancel()  # the fallback stands; nothing to correct
            return
        late.set_result(self._learned(slot, request, fut.result()))

    def _mean_guess(self, slot: _Slot, request: RequestFeatures) -> float:
        """The fallback: the model's recent mean prediction (a neutral rank, an unbiased load), or
        the prompt-length proxy before the first prediction; capped by max_tokens."""
        if slot.mean is None:
            return self._fallback.guess(request)
        cap = request.max_tokens if request.max_tokens is not None else slot.mean
        return max(1.0, min(cap, slot.mean))

    async def _failed(self, request: RequestFeatures, text: str, e: BaseException) -> Estimate:
        log.warning("length prediction failed", extra={"model": request.model, "error": repr(e)})
        return await self._fallback.estimate(request, text)

    def observe(self, request: RequestFeatures, estimate: Estimate, output_tokens: int) -> None:
        late = estimate.late
        if late is not None:  # judge (and log) the learned prediction: now, or when it lands
            if not late.done():
                late.add_done_callback(lambda f: self.observe(request, estimate, output_tokens))
                return
            if late.cancelled():
                return
            estimate = late.result()
        model = request.model
        if output_tokens > 0:
            self._metrics.predictor_ratio.labels(model).observe(estimate.tokens / output_tokens)
        recent = self._recent.setdefault(model, deque(maxlen=TAU_WINDOW))
        recent.append((estimate.tokens, output_tokens))
        self._seen[model] = seen = self._seen.get(model, 0) + 1
        if seen % TAU_EVERY == 0 and len(recent) >= TAU_EVERY:
            tau = kendall_tau_b(np.array([p for p, _ in recent]), np.array([a for _, a in recent]))
            if not np.isnan(tau):
                self._metrics.predictor_tau.labels(model).set(tau)
        if estimate.features is not None and self._feature_log is not None:
            self._feature_log.record(model, estimate.features, output_tokens, self._clock())
