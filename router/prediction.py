"""The output-length predictor seam used by admission accounting and `predicted_load`.

The learned ranker (`flotilla.router.predictor`, its own issue) will implement `LengthPredictor`;
the request path predicts once per request, on arrival, and stores the result in
`RequestFeatures.predicted_output_tokens`, where queue orders and policies read it. Until the learned
predictor is wired in, `ProxyPredictor` stands in: the prompt length, capped by `max_tokens`.
"""

from __future__ import annotations

from typing import Protocol

from flotilla.router.policies.base import RequestFeatures


class LengthPredictor(Protocol):
    async def predict(self, request: RequestFeatures) -> float:
        """Expected number of output tokens (async: a learned model batches requests)."""
        ...


class ProxyPredictor:
    """Input length as the proxy for output length, capped by max_tokens (and by `cap` without it)."""

    def __init__(self, cap: int = 1024) -> None:
        self.cap = cap

    def guess(self, request: RequestFeatures) -> float:
        limit = request.max_tokens if request.max_tokens is not None else self.cap
        return float(max(1, min(limit, request.prompt_tokens)))

    async def predict(self, request: RequestFeatures) -> float:
        return self.guess(request)
