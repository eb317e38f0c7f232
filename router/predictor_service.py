"""Serving the learned length predictors: one per model, named by its fleet, proxy until loaded.

Each model's fleet names an artifact (`spec.router.predictor.name`; `models.<m>.predictor` in a
static config). The service loads it in a worker thread when discovery first reports it, wraps it in
a `BatchingPredictor` (inference micro-batched off the event loop) and from then on answers that
model's requests with the artifact's calibrated p50. Until then, or when loading fails (no artifact,
a missing runtime such as `tokenizers`), the model is served by `ProxyPredictor` and the reason is
logged once: the router always starts. Finished requests come back through `observe`: the ratio of
predicted to actual length and a rolling Kendall's tau are exported (`flotilla_router_predictor_*`),
and (features, actual length) go to the feature log that refits learn from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
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
    from flotilla.router.predictor import BatchingPredictor, FeatureLog, Predictor

log = logging.getLogger("flotilla.router.predictor")

Loader = Callable[[str], "Predictor"]
TAU_WINDOW = 128
TAU_EVERY = 16


def default_loader(root: str | None) -> Loader:
    def load(ref: str) -> Predictor:
        from flotilla.router.predictor import LearnedPredictor
        from flotilla.router.predictor.artifact import ARTIFACTS_DIR

        return LearnedPredictor.load(ref, Path(root) if root else ARTIFACTS_DIR)

    return load


@dataclass(eq=False)
class _Slot:
    ref: str
    batcher: BatchingPredictor | None = None
    error: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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
        from flotilla.router.predictor import RequestFeatures as PredictorInput

        start = self._clock()
        try:
            got = await slot.batcher.predict(PredictorInput(text, request.prompt_tokens, request.max_tokens))
        except Exception as e:  # a broken batch: this request falls back, the next one tries again
            log.warning("length prediction failed", extra={"model": request.model, "error": repr(e)})
            return await self._fallback.estimate(request, text)
        self._metrics.predictor_seconds.labels(request.model).observe(self._clock() - start)
        return Estimate(max(1.0, got.prediction.p50), got.predictor, got.features)

    def observe(self, request: RequestFeatures, estimate: Estimate, output_tokens: int) -> None:
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
