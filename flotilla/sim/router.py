"""The router side of a simulation, built from the router's own pieces.

Policies are the router's policy objects (`flotilla.router.policies`), built by name from its
registry; what they rank are `InstanceView`s frozen by the router's own `InstanceRecord.view()`,
which merges the last scrape (stale by up to one scrape interval) with the router's exact
accounting of its requests in flight. Dispatch is the router's own (`flotilla.router.dispatch`): a
request goes straight to an instance with a free slot (`max_inflight`) when nobody is queued,
otherwise it waits in the router's queue, which is drained whenever a request completes. The
queue order is the router's own plug-in (`flotilla.router.queue_orders`), queueing request indices.

One difference from the live router: the accounting of predicted tokens still to come on an
instance (`InstanceRecord.predicted_remaining`, kept by `Lease.progress` as tokens stream) is read
from the engine model, which keeps the same sum incrementally (streaming it token by token through
leases would make every decoding step cost O(batch)).

Slice continuations (`flotilla.sim.slices`) pass a `steer`, the router's between-slice placement,
applied after the policy's ranking and the memory-aware filter (`flotilla.router.memory.fitting`,
on when `kv_usage_limit` is set) and the target batch (`flotilla.router.batch_target`, on when
`batch_target` is set), in the one `flotilla.router.dispatch.choose`. Instances marked
`down` (a fault scenario) are not routable, as the router stops routing to an ejected instance.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

from flotilla.router.batch_target import BatchTarget
from flotilla.router.dispatch import Steer, charge, choose
from flotilla.router.instances import EngineSample, InstanceRecord, InstanceSpec, InstanceTable
from flotilla.router.policies import Policy, RequestFeatures
from flotilla.router.queue_orders import WaitQueue


class SimRouter:
    def __init__(
        self,
        *,
        instances: int,
        model: str,
        policy: Policy,
        queue: WaitQueue[int],
        rng: random.Random,
        max_inflight: int,
        predicted_remaining: Callable[[int], float],
        kv_usage_limit: float | None = None,
        batch_target: BatchTarget | None = None,
    ) -> None:
        table = InstanceTable(default_max_inflight=max_inflight)
        table.update(
            InstanceSpec(id=f"i{j:03d}", url=f"http://sim-{j}", model=model) for j in range(instances)
        )
        self.records: list[InstanceRecord] = [r for r in table.all()]
        self._index = {r.id: j for j, r in enumerate(self.records)}
        self.policy = policy
        self.queue = queue
        self._rng = rng
        self._remaining = predicted_remaining
        self.decisions = 0
        self._kv_limit = kv_usage_limit
        self._batch_target = batch_target
        self.down: set[int] = set()

    def dispatch(self, features: RequestFeatures, predicted: float, steer: Steer | None = None) -> int | None:
        """Pick an instance for a request and charge it (`flotilla.router.dispatch`, as the router
        does); None if all are full."""
        free = [j for j, r in enumerate(self.records) if r.inflight < r.max_inflight and j not in self.down]
        if not free:
            return None
        for j in free:
            record = self.records[j]
            remaining = self._remaining(j)
            if record.predicted_remaining != remaining:  # setting it drops the record's cached view
                record.predicted_remaining = remaining
        self.decisions += 1
        chosen = choose(
            features,
            [self.records[j] for j in free],
            self.policy,
            self._rng,
            predicted=predicted,
            kv_usage_limit=self._kv_limit,
            batch_target=self._batch_target,
            steer=steer,
        )
        if chosen is None:
            return None
        j = self._index[chosen]
        charge(self.records[j], features, predicted)
        return j

    def admit(
        self, i: int, features: RequestFeatures, predicted: float, steer: Steer | None, now: float
    ) -> int | None:
        """Request `i` (or its next slice) asks for an instance, as `Admission.acquire` does: it is
        dispatched at once when nobody waits and an instance takes it, else queued (None)."""
        j = self.dispatch(features, predicted, steer) if not len(self.queue) else None
        if j is None:
            self.queue.push(i, now)
        return j

    def pump(
        self, now: float, ask: Callable[[int], tuple[RequestFeatures, float, Steer | None]]
    ) -> Iterator[tuple[int, int]]:
        """Dispatch the queue's head while an instance takes it (`Admission.pump`): yields (request,
        instance), each before the next is chosen, so the caller's send counts for the next choice.
        `ask(i)` gives what request `i` is dispatched with now."""
        while len(self.queue):
            i = self.queue.peek(now)
            assert i is not None
            j = self.dispatch(*ask(i))
            if j is None:
                return
            self.queue.pop(now)
            yield i, j

    def first_token(self, instance: int, features: RequestFeatures) -> None:
        """The request's first token came out: its prompt is no longer prefill ahead (`Lease.progress`)."""
        self.records[instance].pending_prefill -= features.prompt_tokens

    def release(
        self, instance: int, features: RequestFeatures, predicted: float, *, prefilled: bool = True
    ) -> None:
        """`prefilled`: whether `first_token` was called for it (a request killed in prefill was not)."""
        record = self.records[instance]
        record.inflight -= 1
        record.inflight_tokens -= features.prompt_tokens + int(predicted)
        if not prefilled:
            record.pending_prefill -= features.prompt_tokens

    def scrape(self, samples: Sequence[EngineSample]) -> None:
        for record, sample in zip(self.records, samples, strict=True):
            record.record_sample(sample)
