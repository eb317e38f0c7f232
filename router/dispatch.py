"""The one dispatch decision: free instances -> policy rank -> KV fit -> batch target -> steer -> charge.

Synchronous and free of I/O, so that the asyncio router (`admission.Admission`) and the fleet
simulator (`flotilla.sim.router.SimRouter`) make the very same decision from the same records;
each only chooses which records are free (the router: routable, a free slot, not excluded by a
retry; the simulator: a free slot and not down) and what it does with the charge (a `Lease`, or
the simulator's own release).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from flotilla.router.batch_target import BatchTarget, within_target
from flotilla.router.instances import InstanceRecord
from flotilla.router.memory import fitting
from flotilla.router.policies import InstanceView, Observer, Policy, RequestFeatures, Snapshot

Steer = Callable[[list[InstanceView]], list[InstanceView]]
"""Reorders the policy's ranking for one request (slice continuations prefer their instance)."""


def choose(
    features: RequestFeatures,
    free: Sequence[InstanceRecord],
    policy: Policy,
    rng: random.Random,
    *,
    predicted: float,
    kv_usage_limit: float | None = None,
    batch_target: BatchTarget | None = None,
    steer: Steer | None = None,
) -> str | None:
    """The id of the instance `features` goes to among `free` (non-empty), or None to wait.

    With `kv_usage_limit`, an instance must have room for the prompt and the predicted output in
    its KV cache; when none does the request waits for one of ours to finish rather than push an
    engine into preemption; with `batch_target`, room in its target batch (`batch_target.py`), or
    the request waits likewise. A policy that learns from placements is told the choice."""
    ranked = policy.rank(features, Snapshot(tuple(r.view() for r in free)), rng)
    if kv_usage_limit is not None and ranked:
        fits = fitting(ranked, features.prompt_tokens + predicted, kv_usage_limit)
        if fits is None:
            return None
        ranked = fits
    if batch_target is not None and ranked:
        room = within_target(ranked, features, batch_target)
        if room is None:
            return None
        ranked = room
    if steer is not None and ranked:
        ranked = steer(ranked)
    if not ranked:
        return None
    if isinstance(policy, Observer):
        policy.observe(features, ranked[0].id)
    return ranked[0].id


def charge(record: InstanceRecord, features: RequestFeatures, predicted: float) -> int:
    """Count the request on its instance until it is released; returns the tokens charged."""
    tokens = features.prompt_tokens + int(predicted)
    record.inflight += 1
    record.inflight_tokens += tokens
    record.predicted_remaining += predicted
    record.pending_prefill += features.prompt_tokens
    return tokens
