"""The output-length predictor seam used by admission accounting, queue order and `predicted_load`.

The request path asks once per request, on arrival, for an `Estimate` and stores its tokens in
`RequestFeatures.predicted_output_tokens`, where queue orders and policies read it (a learned
prediction that was not waited for arrives later, through `Estimate.late`); when the request
finishes it reports the real output length back (`observe`), which is how a learned predictor is
judged (metrics) and refitted (feature log). `ProxyPredictor` is the always-available fallback: the
prompt length, capped by `max_tokens`. `predictor_service.PredictorService` serves the learned
predictors of `flotilla.router.predictor`, one per model, chosen by the fleet's configuration.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from flotilla.router.policies.base import RequestFeatures


@dataclass(frozen=True, slots=True)
class Estimate:
    tokens: float
    """Expected output tokens (the learned predictor's calibrated p50, capped by max_tokens)."""
    predictor: str = "proxy"
    features: Any = None
    """The learned head's input, kept for the feature log; None for predictors without one."""
    late: asyncio.Future[Estimate] | None = None
    """Set when the learned prediction was not waited for: `tokens` is then a fallback, and this
    resolves with the learned estimate when it lands (or is cancelled if it fails). Admission
    re-keys the waiting request or corrects its instance's accounting with it."""


class LengthPredictor(Protocol):
    async def estimate(self, request: RequestFeatures, text: str) -> Estimate:
        """Expected output length (async: a learned model batches requests off the event loop)."""
        ...

    def observe(self, request: RequestFeatures, estimate: Estimate, output_tokens: int) -> None:
        """The request finished with `output_tokens` real output tokens."""
        ...


class ProxyPredictor:
    """Input length as the proxy for output length, capped by max_tokens (and by `cap` without it)."""

    def __init__(self, cap: int = 1024) -> None:
        self.cap = cap

    def guess(self, request: RequestFeatures) -> float:
        limit = request.max_tokens if request.max_tokens is not None else self.cap
        return float(max(1, min(limit, request.prompt_tokens)))

    async def estimate(self, request: RequestFeatures, text: str) -> Estimate:
        return Estimate(self.guess(request))

    def observe(self, request: RequestFeatures, estimate: Estimate, output_tokens: int) -> None:
        pass
