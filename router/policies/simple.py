"""Load-only policies: round robin, least requests, and KV-cache utilisation."""

from __future__ import annotations

import random
from typing import ClassVar

from flotilla.api.routing import ChoiceParams, KvUtilizationParams, NoParams
from flotilla.router.policies.base import InstanceView, RequestFeatures, Snapshot, rank_by_cost


class RoundRobin:
    """Cycle through the instances (by id order), skipping none: the baseline."""

    name: ClassVar[str] = "round_robin"
    Params = NoParams

    def __init__(self, params: NoParams) -> None:
        self._next = 0

    def rank(self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random) -> list[InstanceView]:
        ordered = sorted(snapshot.instances, key=lambda i: i.id)
        if not ordered:
            return []
        start = self._next % len(ordered)
        self._next += 1
        return ordered[start:] + ordered[:start]


class LeastRequest:
    """Fewest requests (running + waiting, as estimated from scrapes and own accounting)."""

    name: ClassVar[str] = "least_request"
    Params = ChoiceParams

    def __init__(self, params: ChoiceParams) -> None:
        self.params = params

    def rank(self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random) -> list[InstanceView]:
        inst = snapshot.instances
        return rank_by_cost(inst, [i.est_requests for i in inst], rng, self.params.choices)


class KvUtilization:
    """Lowest KV-cache usage, with queued requests as a tie-breaker (a full cache preempts)."""

    name: ClassVar[str] = "kv_utilization"
    Params = KvUtilizationParams

    def __init__(self, params: KvUtilizationParams) -> None:
        self.params = params

    def rank(self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random) -> list[InstanceView]:
        inst = snapshot.instances
        w = self.params.waiting_weight
        costs = [i.est_kv_usage + w * max(i.waiting, i.est_requests - i.max_inflight, 0) for i in inst]
        return rank_by_cost(inst, costs, rng, self.params.choices)
