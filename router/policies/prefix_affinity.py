"""Prefix affinity with bounded load: consistent hashing with bounded loads (Mirrokni et al. 2018).

Requests whose prompts share their leading blocks hash to the same point of a ring of instances,
so they land where that prefix is already in the KV cache; because the key is a stable hash, every
router replica sends the same prefix to the same instance without sharing state. An instance takes
the request only if its load stays within `load_factor` x the mean load, otherwise the walk goes on
along the ring: a hot prefix spills over to its successors instead of overloading one engine.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from flotilla.router.policies.base import InstanceView, RequestFeatures, Snapshot


class PrefixAffinityParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix_blocks: int = Field(default=4, ge=1, description="leading prompt blocks that form the key")
    load_factor: float = Field(default=1.25, gt=1.0, description="c in 'load <= c x mean load'")
    virtual_nodes: int = Field(default=64, ge=1, le=1024, description="ring points per instance")


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class PrefixAffinity:
    name: ClassVar[str] = "prefix_affinity"
    Params = PrefixAffinityParams

    def __init__(self, params: PrefixAffinityParams) -> None:
        self.params = params
        self._ring_ids: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[str] = []

    def _ring(self, ids: tuple[str, ...]) -> None:
        if ids == self._ring_ids:
            return
        pairs = sorted(
            (_point(f"{iid}#{v}".encode()), iid) for iid in ids for v in range(self.params.virtual_nodes)
        )
        self._points = [p for p, _ in pairs]
        self._owners = [o for _, o in pairs]
        self._ring_ids = ids

    def rank(self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random) -> list[InstanceView]:
        by_id = {i.id: i for i in snapshot.instances}
        if not by_id:
            return []
        self._ring(tuple(sorted(by_id)))
        hashes = request.prefix_hashes[: self.params.prefix_blocks]
        # With no prefix there is nothing to be affine to: a random start spreads the load.
        key = _point(hashes[-1].to_bytes(8, "big")) if hashes else rng.getrandbits(64)
        loads = {iid: v.est_requests for iid, v in by_id.items()}
        # Bounded loads: with this request placed, nobody may exceed ceil(c x mean).
        cap = math.ceil(self.params.load_factor * (sum(loads.values()) + 1) / len(loads))
        start = bisect.bisect_left(self._points, key) % len(self._points)
        walk: list[str] = []
        seen: set[str] = set()
        for k in range(len(self._points)):
            owner = self._owners[(start + k) % len(self._points)]
            if owner not in seen:
                seen.add(owner)
                walk.append(owner)
                if len(walk) == len(by_id):
                    break
        within = [iid for iid in walk if loads[iid] + 1 <= cap]
        over = [iid for iid in walk if loads[iid] + 1 > cap]
        return [by_id[iid] for iid in within + over]
