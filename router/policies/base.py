"""The balancing-policy plug-in interface, and the immutable inputs policies decide from.

A policy is a small synchronous object: given one request's features, a frozen snapshot of the
instances that may take it, and a random generator, it ranks those instances best first. It does no
I/O and reads no clock, so the same objects run unchanged in the router and in the discrete-event
fleet simulator. The random generator breaks ties and samples candidates (power of two choices), so
several router replicas seeing the same scraped state do not all pick the same instance.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What a policy may know about a request before it runs."""

    model: str
    prompt_tokens: int
    """Prompt length in tokens (exact for token-id prompts, estimated from characters otherwise)."""
    max_tokens: int | None = None
    prefix_hashes: tuple[int, ...] = ()
    """Chained hashes of the prompt's leading blocks (stable across processes)."""
    predicted_output_tokens: float | None = None
    """Expected output length from the length predictor, when one is configured (or the client's
    own estimate: `hints.py`)."""
    attained_tokens: int = 0
    """Output tokens the request has already received (a continuation slice's generated tokens)."""
    priority: int = 0
    """The client's priority tier, higher first (`hints.py`)."""
    ttft_slo_s: float | None = None
    """The client's time-to-first-token target, from its arrival at the router."""
    tpot_slo_s: float | None = None
    """The client's time-per-output-token target (the step time it can bear)."""


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One instance as a policy sees it: scraped engine state plus this router's accounting."""

    id: str
    running: int = 0
    """vllm:num_requests_running at the last scrape."""
    waiting: int = 0
    """vllm:num_requests_waiting at the last scrape."""
    kv_usage: float = 0.0
    """vllm:kv_cache_usage_perc at the last scrape (0..1)."""
    kv_capacity_tokens: int | None = None
    """KV cache size in tokens (num_gpu_blocks x block_size from vllm:cache_config_info)."""
    inflight: int = 0
    """Requests this router has on the instance now."""
    inflight_tokens: int = 0
    """Prompt + predicted output tokens of those requests."""
    context_tokens: float = 0.0
    """Their context now: prompts plus the output predicted to have streamed so far."""
    peer_inflight: int = 0
    """Requests the router's peer replicas have on the instance, as they last published them
    (shared state: `peers`; 0 without it)."""
    predicted_remaining_tokens: float = 0.0
    """Predicted output tokens still to come for this router's requests and its peers'."""
    pending_prefill_tokens: int = 0
    """Prompt tokens of this router's and its peers' requests that have not streamed a first token
    yet (queued in the engine or prefilling): the prefill work known to be ahead of the instance."""
    est_requests: float = 0.0
    """Best estimate of all requests on the instance (every router's): the scraped count corrected by
    this router's and its peers' starts and finishes since the scrape, never below their count."""
    est_kv_usage: float = 0.0
    """Scraped KV usage corrected by the tokens this router and its peers added or removed since."""
    max_inflight: int = 256
    """How many requests the router lets this instance run at once (about what it can batch)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The instances a request may go to, frozen at decision time."""

    instances: tuple[InstanceView, ...]


class Policy(Protocol):
    """Rank `snapshot.instances` for `request`, best first (a subset is allowed; empty means none)."""

    name: ClassVar[str]

    def rank(
        self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random
    ) -> list[InstanceView]: ...


@runtime_checkable
class Observer(Protocol):
    """A policy that learns from its decisions: told where each request was actually sent.

    The router and the simulator call it once per dispatched request, after any reordering of the
    ranking (KV fit, slice continuations), so the policy's state follows real placements.
    """

    def observe(self, request: RequestFeatures, instance_id: str) -> None: ...


def rank_by_cost(
    instances: Sequence[InstanceView], costs: Sequence[float], rng: random.Random, choices: int
) -> list[InstanceView]:
    """Best first by cost; with `choices` = d > 0 the winner is the best of d random candidates.

    Sampling d candidates (power of d choices) keeps replicas that share stale state from herding
    onto one instance, at a small cost in balance; d = 0 takes the global minimum, a random one
    among equals. The rest follow by cost (they are only fallbacks).
    """
    n = len(instances)
    if n == 0:
        return []
    order = sorted(range(n), key=costs.__getitem__)
    if choices <= 0 or choices >= n:
        best = costs[order[0]]
        tied = [i for i in order if costs[i] == best]
        first = tied[rng.randrange(len(tied))] if len(tied) > 1 else order[0]
    else:
        first = min(rng.sample(range(n), choices), key=costs.__getitem__)
    return [instances[first]] + [instances[i] for i in order if i != first]
