"""Admission: a per-model queue in front of the instances, and leases on instance capacity.

Rather than push every request to an engine at once (where it would wait in the engine's queue,
beyond the reach of better balancing), the router lets each instance hold at most `max_inflight`
of its requests, about what the engine can batch. Requests beyond that wait here, in an order given
by a pluggable `WaitQueue` (`queue_orders.py`: the router's default `shortest_work_first`, `fcfs`,
...; with the client's priority tiers and TTFT due times), and are dispatched the moment any
instance frees a slot, with the policy choosing among the instances that have one (and, with
`kv_usage_limit`, the KV memory to take it: `memory.py`; with `batch_target`, room in its target
batch: `batch_target.py`). A full queue, or a wait longer than `max_wait_s`, is answered 429 with
Retry-After.

A request may arrive with a fallback length estimate and its learned prediction still being
computed (`Estimate.late`: the router does not wait for predictions that cannot change a dispatch,
nor past a deadline). When that prediction lands, a waiting request is re-keyed in its queue and a
dispatched one has its instance's predicted tokens corrected (`Lease.revise`), so the accounting
`predicted_load` and the KV check read is the learned one as soon as it exists.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from flotilla.router.batch_target import BatchTarget
from flotilla.router.dispatch import Steer, charge, choose
from flotilla.router.errors import ApiError
from flotilla.router.instances import InstanceRecord, InstanceTable
from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies import RequestFeatures
from flotilla.router.policy_book import PolicyBook
from flotilla.router.queue_orders import WaitQueue, default_queue_orders

if TYPE_CHECKING:
    from flotilla.router.prediction import Estimate

log = logging.getLogger("flotilla.router.admission")


@dataclass(eq=False)
class Waiter:
    features: RequestFeatures
    exclude: frozenset[str]
    arrival: float
    seq: int
    steer: Steer | None = None
    future: asyncio.Future[Lease] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    lease: Lease | None = None
    """The lease it was granted: a prediction landing after dispatch revises it."""


def _features(waiter: Waiter) -> RequestFeatures:
    return waiter.features


def queue_factory(name: str, params: Mapping[str, Any] | None = None) -> Callable[[], WaitQueue[Waiter]]:
    """The queue order named in the configuration (`queue_orders`), reading the waiters' features
    (their predictions included); raises ValueError on a bad name or params."""
    return functools.partial(default_queue_orders().factory(name, params), _features)


def _arrival_order() -> Callable[[], WaitQueue[Waiter]]:
    return queue_factory("fcfs")


@dataclass(eq=False)
class Lease:
    """One request's claim on one instance's capacity; release exactly once."""

    record: InstanceRecord
    features: RequestFeatures
    tokens: int
    predicted: float
    on_release: Callable[[Lease], None]
    streamed: int = 0
    released: bool = False
    prefill: int = 0
    """Prompt tokens still counted in the instance's `pending_prefill` (until the first output)."""

    def progress(self, tokens: int) -> None:
        """The engine streamed `tokens` more output tokens: less work remains on the instance."""
        if self.prefill:  # any streamed event comes after the prompt's prefill: it is done
            self.record.pending_prefill -= self.prefill
            self.prefill = 0
        before = max(0.0, self.predicted - self.streamed)
        self.streamed += tokens
        after = max(0.0, self.predicted - self.streamed)
        self.record.predicted_remaining -= before - after

    def revise(self, predicted: float) -> None:
        """The learned prediction landed after dispatch: replace the fallback in the accounting."""
        if self.released:
            return
        remaining = max(0.0, predicted - self.streamed) - max(0.0, self.predicted - self.streamed)
        self.record.predicted_remaining += remaining
        tokens = self.features.prompt_tokens + int(predicted)
        self.record.inflight_tokens += tokens - self.tokens
        self.tokens, self.predicted = tokens, predicted
        self.features = replace(self.features, predicted_output_tokens=predicted)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.on_release(self)


class Admission:
    def __init__(
        self,
        table: InstanceTable,
        policies: PolicyBook,
        metrics: RouterMetrics,
        *,
        rng: random.Random,
        queue_factory: Callable[[], WaitQueue[Waiter]] | None = None,
        max_queue: int = 1024,
        max_wait_s: float = 30.0,
        kv_usage_limit: float | None = None,
        batch_target: BatchTarget | None = None,
        on_placed: Callable[[RequestFeatures, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_placed = on_placed
        self._kv_limit = kv_usage_limit
        self._batch_target = batch_target
        self._table = table
        self._policies = policies
        self._metrics = metrics
        self._rng = rng
        self._queue_factory = queue_factory or _arrival_order()
        self._max_queue = max_queue
        self._max_wait = max_wait_s
        self._clock = clock
        self._queues: dict[str, WaitQueue[Waiter]] = {}
        self._seq = itertools.count()

    def depth(self, model: str) -> int:
        queue = self._queues.get(model)
        return len(queue) if queue is not None else 0

    def prediction_matters(self, features: RequestFeatures) -> bool:
        """Whether waiting for this request's learned prediction could change its dispatch now: it
        would be dispatched at once (no queue, a free slot) and its own prediction is read there,
        by the KV check or by a policy that declares `uses_prediction = True` (none of the built-in
        ones: `predicted_load` ranks by the instances' accounting, which `Lease.revise` corrects).
        A queued request gets its prediction while it waits."""
        model = features.model
        if self.depth(model):
            return False
        records = self._table.routable(model)
        if not any(r.has_capacity for r in records):
            return False
        if self._kv_limit is not None:
            return True
        policy = self._policies.policy_for(model, self._table.routing(model))
        return bool(getattr(policy, "uses_prediction", False))

    async def acquire(
        self,
        features: RequestFeatures,
        exclude: frozenset[str] = frozenset(),
        steer: Steer | None = None,
        late: asyncio.Future[Estimate] | None = None,
    ) -> Lease:
        """`late`: the learned prediction, when `features` carry a fallback (see the module doc)."""
        if late is not None and late.done():
            if not late.cancelled():
                features = replace(features, predicted_output_tokens=late.result().tokens)
            late = None
        model = features.model
        if model not in self._table.models():
            raise ApiError(404, f"The model `{model}` does not exist.", param="model")
        if not [r for r in self._table.routable(model) if r.id not in exclude]:
            raise ApiError(503, f"no instance of `{model}` is ready", retry_after=1)
        if not self.depth(model):
            lease = self._dispatch(features, exclude, steer)
            if lease is not None:
                self._metrics.queue_wait.labels(model).observe(0.0)
                if late is not None:
                    late.add_done_callback(functools.partial(_landed_on_lease, lease))
                return lease
        if self.depth(model) >= self._max_queue:
            self._metrics.rejected.labels(model).inc()
            raise ApiError(429, f"too many requests queued for `{model}`", retry_after=1)
        waiter = Waiter(features, exclude, self._clock(), next(self._seq), steer)
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = self._queue_factory()
        queue.push(waiter, waiter.arrival)
        self._publish_depth(model)
        if late is not None:
            late.add_done_callback(lambda f: self._landed_on_waiter(waiter, f))
        try:
            async with asyncio.timeout(self._max_wait):
                lease = await asyncio.shield(waiter.future)
        except TimeoutError:
            self._abandon(waiter)
            self._metrics.rejected.labels(model).inc()
            raise ApiError(
                429, f"waited {self._max_wait:g}s for a free instance of `{model}`", retry_after=1
            ) from None
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        self._metrics.queue_wait.labels(model).observe(self._clock() - waiter.arrival)
        return lease

    def _abandon(self, waiter: Waiter) -> None:
        if waiter.future.done():
            if not waiter.future.cancelled():
                waiter.future.result().release()  # granted just as we gave up: hand it back
            return
        waiter.future.cancel()
        self._queues[waiter.features.model].remove(waiter)
        self._publish_depth(waiter.features.model)

    def _landed_on_waiter(self, waiter: Waiter, late: asyncio.Future[Estimate]) -> None:
        if late.cancelled():
            return
        tokens = late.result().tokens
        if waiter.lease is not None:  # dispatched before the prediction landed
            waiter.lease.revise(tokens)
        elif not waiter.future.done():
            waiter.features = replace(waiter.features, predicted_output_tokens=tokens)
            self._queues[waiter.features.model].rekey(waiter)

    def pump(self, model: str | None = None) -> None:
        """Dispatch queued requests while instances have free slots."""
        for m in [model] if model is not None else list(self._queues):
            queue = self._queues.get(m)
            if not queue:
                continue
            now = self._clock()
            while (waiter := queue.peek(now)) is not None:
                lease = self._dispatch(waiter.features, waiter.exclude, waiter.steer)
                if lease is None:
                    break
                queue.pop(now)
                waiter.lease = lease
                waiter.future.set_result(lease)
            self._publish_depth(m)

    def _dispatch(
        self, features: RequestFeatures, exclude: frozenset[str], steer: Steer | None = None
    ) -> Lease | None:
        records = self._table.routable(features.model)
        free = [r for r in records if r.has_capacity and r.id not in exclude]
        if not free:
            return None
        policy = self._policies.policy_for(features.model, self._table.routing(features.model))
        predicted = features.predicted_output_tokens or 0.0
        chosen = choose(
            features,
            free,
            policy,
            self._rng,
            predicted=predicted,
            kv_usage_limit=self._kv_limit,
            batch_target=self._batch_target,
            steer=steer,
        )
        if chosen is None:
            return None
        record = self._table.get(chosen)
        assert record is not None
        tokens = charge(record, features, predicted)
        if self._on_placed is not None:  # the replicas' shared state: peers' prefix indexes learn it
            self._on_placed(features, record.id)
        self._metrics.inflight.labels(features.model, record.id).set(record.inflight)
        return Lease(record, features, tokens, predicted, self._release, prefill=features.prompt_tokens)

    def _release(self, lease: Lease) -> None:
        r = lease.record
        r.inflight -= 1
        r.inflight_tokens -= lease.tokens
        r.predicted_remaining -= max(0.0, lease.predicted - lease.streamed)
        r.pending_prefill -= lease.prefill
        lease.prefill = 0
        self._metrics.inflight.labels(lease.features.model, r.id).set(r.inflight)
        self.pump(lease.features.model)

    def _publish_depth(self, model: str) -> None:
        self._metrics.queue_depth.labels(model).set(self.depth(model))


def _landed_on_lease(lease: Lease, late: asyncio.Future[Estimate]) -> None:
    if not late.cancelled():
        lease.revise(late.result().tokens)
