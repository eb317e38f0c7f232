"""Memory-aware placement: keep each instance's KV cache below its preemption point.

vLLM preempts (and recomputes) running sequences when the KV cache fills, which costs far more
than waiting a moment in the router's queue. Each request's KV need is estimated as its prompt plus
its predicted output (for a slice: context so far plus at most S); an instance may take it only if
its estimated usage (the last scrape, corrected by what this router started or finished since) stays
under `limit`. When no instance fits, the request waits for one of this router's requests to
finish; when this router has nothing in flight that could free memory, it is admitted anyway (the
engine's own queue is then the only place to wait).
"""

from __future__ import annotations

from collections.abc import Sequence

from flotilla.router.policies.base import InstanceView


def kv_after(view: InstanceView, need_tokens: float) -> float | None:
    """Estimated KV usage (0..1+) once the request is added; None when the capacity is unknown."""
    if not view.kv_capacity_tokens:
        return None
    return view.est_kv_usage + need_tokens / view.kv_capacity_tokens


def fitting(ranked: Sequence[InstanceView], need_tokens: float, limit: float) -> list[InstanceView] | None:
    """The ranked instances that stay under `limit` (unknown capacity fits), in order; None means
    wait (nothing fits, and some of this router's requests will free memory); with nothing to wait
    for, the ranking is returned unchanged."""
    fits = [v for v in ranked if (after := kv_after(v, need_tokens)) is None or after <= limit]
    if fits:
        return fits
    if any(v.inflight > 0 for v in ranked):
        return None
    return list(ranked)
