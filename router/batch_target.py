"""The target batch: how many sequences an instance should decode at once, from its step-time profile.

Under continuous batching every sequence an engine adds slows every other one's decode step. The
step-time profile (`flotilla.profiles`) prices it: a decode step of `b` sequences that read `kv`
tokens of context costs `base + decode_seq * b + kv_token * kv (+ compute beyond the knee)`. For
small batches the fixed `base` (reading the weights) dominates and a sequence more is almost
free; past the batch where the per-sequence costs equal it, each sequence more slows the others
about as much as it adds. An instance "has room" for a request only while its decode step with
the request added stays within `max_decode_slowdown` times the step of a single sequence of that
context, and within the TPOT targets (the configured one, and the request's own `x-slo-tpot-ms`).

Requests beyond it wait at the router, where the queue order (`queue_orders`) picks the next one:
without a bound there is no queue to order on compute-bound engines, whose KV cache never fills
(benchmarks/backlog). The target moves with the context: long contexts make every sequence's
attention dearer, so the same profile gives ~12 sequences at 10k tokens of context and ~100 at
1k on an H100 with Llama-3.1-8B (`target_batch`).

Pure: the decision reads an `InstanceView` (this router's requests, the scraped total) and a
request's features, as `memory.fitting` does, and runs in the router and the simulator alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flotilla.profiles import StepTimeProfile, load_profile
from flotilla.router.memory import with_room
from flotilla.router.policies.base import InstanceView, RequestFeatures


class BatchTargetParams(BaseModel):
    """`batch_target` in the router's configuration (and a simulator scenario)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = Field(description="a shipped step-time profile's name, or a profile JSON's path")
    max_decode_slowdown: float | None = Field(
        default=2.0,
        gt=1.0,
        description="largest decode step, as a multiple of one sequence's step at the same context",
    )
    tpot_ms: float | None = Field(default=None, gt=0, description="largest decode step (TPOT target)")

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, value: str) -> str:
        try:
            load_profile(value)
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
        return value

    @model_validator(mode="after")
    def _some_bound(self) -> BatchTargetParams:
        if self.max_decode_slowdown is None and self.tpot_ms is None:
            raise ValueError("batch_target needs max_decode_slowdown or tpot_ms")
        return self


@dataclass(frozen=True)
class BatchTarget:
    profile: StepTimeProfile
    max_decode_slowdown: float | None
    tpot_s: float | None

    @classmethod
    def from_params(cls, params: BatchTargetParams) -> BatchTarget:
        tpot = None if params.tpot_ms is None else params.tpot_ms / 1000.0
        return cls(load_profile(params.profile), params.max_decode_slowdown, tpot)

    def decode_step_s(self, seqs: int, context_tokens: float) -> float:
        """One decode step of `seqs` sequences of `context_tokens` each, in seconds."""
        return self.profile.step_time(decode_seqs=seqs, kv_tokens_read=int(seqs * context_tokens))

    def _limit_s(self, context_tokens: float, tpot_slo_s: float | None) -> float:
        limit = math.inf
        if self.max_decode_slowdown is not None:
            limit = self.max_decode_slowdown * self.decode_step_s(1, context_tokens)
        for tpot in (self.tpot_s, tpot_slo_s):
            if tpot is not None:
                limit = min(limit, tpot)
        return limit

    def fits(self, view: InstanceView, features: RequestFeatures) -> bool:
        """Whether the instance may take the request: its decode step with it stays in the target.

        The batch is every router's requests on it (the scrape, corrected since: `est_requests`)
        plus this one; their context is this router's requests' prompts and output so far, and the
        new prompt, averaged. A lone request always fits."""
        seqs = max(view.inflight, math.ceil(view.est_requests)) + 1
        if seqs <= 1:
            return True
        context = (view.context_tokens + features.prompt_tokens) / (view.inflight + 1)
        return self.decode_step_s(seqs, context) <= self._limit_s(context, features.tpot_slo_s)

    def target_batch(self, context_tokens: float, limit: int = 4096) -> int:
        """The largest batch within the target at this context (at least 1, at most `limit`)."""
        bound = self._limit_s(context_tokens, None)
        best = 1
        for b in range(2, limit + 1):
            if self.decode_step_s(b, context_tokens) > bound:
                break
            best = b
        return best


def within_target(
    ranked: Sequence[InstanceView], features: RequestFeatures, target: BatchTarget
) -> list[InstanceView] | None:
    """The ranked instances with room in their target batch (`memory.with_room`'s rule)."""
    return with_room(ranked, lambda v: target.fits(v, features))
