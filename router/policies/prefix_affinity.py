"""Prefix affinity: send a request where the longest part of its prompt went recently, within a load bound.

Keying on a fixed leading block (the first version: consistent hashing of the first 64 tokens)
collapses when every prompt starts with the same system prompt: all requests get one key and the
bounded-load walk fills the instances in ring order. Like SGLang's cache-aware router and llm-d's
prefix scorer, this policy instead matches the LONGEST prefix an instance is likely to hold.

Each router keeps, per instance, an approximate index of the prefix block hashes it routed there
(a bounded LRU, fed by the router and the simulator through `observe(request, instance_id)` once an
instance is chosen); `rank` only reads it, so the policy stays a synchronous plug-in without I/O.
Block hashes are chained, so a match at depth k implies the whole first k blocks match; touching a
prompt's blocks shallowest last keeps every index prefix-closed (the LRU drops deep blocks first),
so the match length is found by binary search.

An instance takes the request only if its load stays within `load_factor` x the mean load
(bounded loads, Mirrokni et al. 2018). Among those, a long enough match (`min_match_blocks` and
`min_match_fraction` of the prompt's hashed blocks) wins, the least loaded of the deepest matches
first; otherwise the least loaded instance does. So a short system prompt shared by everyone pins
nothing (it matches a small fraction of a long prompt, and every instance soon holds it), while a
conversation's next turn returns to the instance holding its previous turns.

Each router replica has its own index (as SGLang's): replicas agree only as far as they see the same
requests. The index forgets instances beyond `max_instances`, least recently observed first.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from typing import ClassVar

from flotilla.api.routing import PrefixAffinityParams
from flotilla.router.policies.base import InstanceView, RequestFeatures, Snapshot


class PrefixIndex:
    """Per instance, an LRU set of the prefix block hashes recently routed to it."""

    def __init__(self, blocks_per_instance: int, max_instances: int) -> None:
        self._capacity = blocks_per_instance
        self._max_instances = max_instances
        self._by_instance: OrderedDict[str, OrderedDict[int, None]] = OrderedDict()

    def add(self, instance_id: str, hashes: tuple[int, ...]) -> None:
        lru = self._by_instance.get(instance_id)
        if lru is None:
            lru = self._by_instance[instance_id] = OrderedDict()
            if len(self._by_instance) > self._max_instances:
                self._by_instance.popitem(last=False)
        else:
            self._by_instance.move_to_end(instance_id)
        # Deepest first, so the shallow blocks are the most recent and are evicted last.
        for h in reversed(hashes[: self._capacity]):
            lru[h] = None
            lru.move_to_end(h)
        while len(lru) > self._capacity:
            lru.popitem(last=False)

    def match(self, instance_id: str, hashes: tuple[int, ...]) -> int:
        """How many leading blocks of `hashes` the instance holds (its index is prefix-closed)."""
        lru = self._by_instance.get(instance_id)
        if not lru:
            return 0
        lo, hi = 0, len(hashes)  # invariant: hashes[:lo] held; hashes[:hi+1] not (or past the end)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if hashes[mid - 1] in lru:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def __len__(self) -> int:
        return sum(len(lru) for lru in self._by_instance.values())


class PrefixAffinity:
    name: ClassVar[str] = "prefix_affinity"
    Params = PrefixAffinityParams

    def __init__(self, params: PrefixAffinityParams) -> None:
        self.params = params
        self.index = PrefixIndex(params.index_blocks, params.max_instances)

    def observe(self, request: RequestFeatures, instance_id: str) -> None:
        """Record that `request` was sent to `instance_id` (its prefix is now cached there)."""
        if request.prefix_hashes:
            self.index.add(instance_id, request.prefix_hashes)

    def rank(self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random) -> list[InstanceView]:
        instances = list(snapshot.instances)
        if not instances:
            return []
        hashes = request.prefix_hashes
        # Bounded loads: with this request placed, nobody may exceed ceil(c x mean).
        total = sum(i.est_requests for i in instances)
        cap = math.ceil(self.params.load_factor * (total + 1) / len(instances))
        needed = max(self.params.min_match_blocks, self.params.min_match_fraction * len(hashes))

        def key(view: InstanceView) -> tuple[bool, int, float]:
            over = view.est_requests + 1 > cap
            matched = self.index.match(view.id, hashes) if hashes and not over else 0
            return (over, -(matched if matched >= needed else 0), view.est_requests)

        rng.shuffle(instances)  # equal keys: a random one first, so equals share the load
        return sorted(instances, key=key)
