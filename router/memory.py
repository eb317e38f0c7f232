"""Memory-aware placement: keep each instance's KV cache below its preemption point.

vLLM preempts (and recomputes) running sequences when the KV cache fills, which costs far more
than waiting a moment in the router's queue. Each request's KV need is estimated as its prompt plus
its predicted output (for a slice: context so far plus at most S); an instance may take it only if
its estimated usage (the last scrape, corrected by what this router started or finished since, plus
the prompts of its requests still queued in the engine at the scrape) stays under `limit`. When no
instance fits, the request waits for one of this router's requests to finish; when this router has
nothing in flight that could free memory, it is admitted anyway (the engine's own queue is then the
only place to wait).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flotilla.router.policies.base import InstanceView


def kv_after(view: InstanceView, need_tokens: float) -> float | None:
    """Estimated KV usage (0..1+) once the request is added; None when the capacity is unknown."""
    if not view.kv_capacity_tokens:
        return None
    return view.est_kv_usage + need_tokens / view.kv_capacity_tokens


def with_room(
    ranked: Sequence[InstanceView], has_room: Callable[[InstanceView], bool]
) -> list[InstanceView] | None:
    """The ranked instances with room, in order; None means wait (none has, and some of this
    router's requests will free room); with nothing of ours to wait for, the ranking unchanged
    (the engines' own queues are then the only place to wait). The rule of every budget the router
    holds a request back by: the KV budget here, the target batch (`batch_target`)."""
    room = [v for v in ranked if has_room(v)]
    if room:
        return room
    if any(v.inflight > 0 for v in ranked):
        return None
    return list(ranked)


def fitting(ranked: Sequence[InstanceView], need_tokens: float, limit: float) -> list[InstanceView] | None:
    """The ranked instances that stay under `limit` (unknown capacity fits): `with_room`."""
    return with_room(ranked, lambda v: (after := kv_after(v, need_tokens)) is None or after <= limit)
