"""Vectorised cluster state for the heuristics: one numpy row per node, fit checks for all nodes at once.

The heuristics (kube-scheduler re-implementation, best-fit, the solver's warm start) place thousands of
pods on a thousand nodes inside the solver's 1 s budget; a Python loop over nodes per pod is 10x too
slow, a masked numpy comparison is not. Undo is a journal, because gangs are all-or-nothing.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import numpy.typing as npt

from flotilla.placement.rules.feasibility import eligible
from flotilla.placement.types.snapshot import Pod, Resources, Snapshot, SpreadMode

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def constraint_signature(pod: Pod) -> tuple[object, ...]:
    """What node eligibility depends on besides size: pods with equal signatures see equal nodes."""
    return (pod.tolerations, pod.node_selector)


class FastState:
    def __init__(self, snapshot: Snapshot, partition: list[int] | None = None) -> None:
        self.snapshot = snapshot
        self.names = [n.name for n in snapshot.nodes]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.alloc: IntArray = np.array(
            [n.allocatable.as_tuple() for n in snapshot.nodes], dtype=np.int64
        ).reshape(-1, 4)
        self.free: IntArray = self.alloc.copy()
        self.ready: BoolArray = np.array([n.ready for n in snapshot.nodes], dtype=bool)
        self.pods_on: list[dict[str, Pod]] = [{} for _ in snapshot.nodes]
        self.where: dict[str, int] = {}
        self._eligible: dict[tuple[object, ...], BoolArray] = {}
        self._demands: dict[Resources, IntArray] = {}
        # spread: (fleet, key) -> (domain index per node, count per domain)
        self._domain_of: dict[str, IntArray] = {}
        self._spread_counts: dict[tuple[str, str], IntArray] = {}
        self._fleet_keys: dict[str, set[str]] = defaultdict(set)
        # (fleet, key) -> domains holding at least one pod of the fleet; key -> nodes per domain
        self._present: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._members: dict[str, list[list[int]]] = {}
        self._candidates: dict[tuple[str, str], IntArray] = {}
        self.journal: list[tuple[str, Pod, int]] = []
        # part -> free GPUs -> nodes (insertion-ordered sets): best-fit scans a few buckets, not all nodes
        self.part = partition if partition is not None else [0] * len(self.names)
        self.buckets: dict[int, dict[int, dict[int, None]]] = defaultdict(lambda: defaultdict(dict))
        for i, gpus in enumerate(self.free[:, 0].tolist()):
            self.buckets[self.part[i]][gpus][i] = None
        self.removals = 0
        self.part_of: IntArray = np.array(self.part, dtype=np.int64)
        for pod in (*snapshot.bound, *snapshot.pending):
            if pod.spread is not None:
                self._fleet_keys[pod.fleet].add(pod.spread.topology_key)
            if pod.pack is not None:
                self._fleet_keys[pod.fleet].add(pod.pack.topology_key)
        for pod in snapshot.bound:
            if pod.node in self.index:
                self.place(pod, self.index[pod.node])
        self.journal.clear()

    def demand(self, pod: Pod) -> IntArray:
        """The pod's demand row, shared by pods of equal requests (read-only: never update in place)."""
        row = self._demands.get(pod.requests)
        if row is None:
            row = np.array(pod.demand.as_tuple(), dtype=np.int64)
            row.flags.writeable = False
            self._demands[pod.requests] = row
        return row

    def eligible_mask(self, pod: Pod) -> BoolArray:
        sig = (constraint_signature(pod), pod.demand.as_tuple())
        mask = self._eligible.get(sig)
        if mask is None:
            mask = np.array([eligible(pod, n) for n in self.snapshot.nodes], dtype=bool)
            self._eligible[sig] = mask
        return mask

    def _domains(self, key: str) -> IntArray:
        arr = self._domain_of.get(key)
        if arr is None:
            values: dict[str, int] = {}
            arr = np.array(
                [values.setdefault(n.label(key) or "", len(values)) for n in self.snapshot.nodes],
                dtype=np.int64,
            )
            self._domain_of[key] = arr
        return arr

    def _counts(self, fleet: str, key: str) -> IntArray:
        counts = self._spread_counts.get((fleet, key))
        if counts is None:
            counts = np.zeros(int(self._domains(key).max(initial=0)) + 1, dtype=np.int64)
            self._spread_counts[(fleet, key)] = counts
        return counts

    def spread_ok(self, pod: Pod) -> BoolArray | None:
        spread = pod.spread
        if spread is None or spread.mode is not SpreadMode.HARD:
            return None
        counts = self._counts(pod.fleet, spread.topology_key)
        return counts[self._domains(spread.topology_key)] < spread.max_per_domain

    def pack_candidates(self, pod: Pod) -> IntArray | None:
        """Nodes in the domains where the pod's pack fleet already runs; None if it runs nowhere.

        Cached per fleet until the set of its domains changes (rare next to placements), so a pack
        pod costs a small vectorised check rather than a pass over every node.
        """
        pack = pod.pack
        if pack is None:
            return None
        key = (pod.fleet, pack.topology_key)
        present = self._present.get(key)
        if not present:
            return None
        cached = self._candidates.get(key)
        if cached is None:
            members = self._members.get(pack.topology_key)
            if members is None:
                domains = self._domains(pack.topology_key)
                members = [[] for _ in range(int(domains.max(initial=0)) + 1)]
                for node, domain in enumerate(domains.tolist()):
                    members[domain].append(node)
                self._members[pack.topology_key] = members
            nodes = [node for domain in sorted(present) for node in members[domain]]
            cached = np.array(nodes, dtype=np.int64)
            self._candidates[key] = cached
        return cached

    def pack_present(self, pod: Pod) -> BoolArray | None:
        """Nodes in a domain where the pod's pack fleet already has a pod; None if it has none yet."""
        pack = pod.pack
        if pack is None:
            return None
        counts = self._counts(pod.fleet, pack.topology_key)
        if not counts.any():
            return None
        return counts[self._domains(pack.topology_key)] > 0

    def pack_ok(self, pod: Pod) -> BoolArray | None:
        """Hard pack: only the fleet's domains, once it has one."""
        if pod.pack is None or pod.pack.mode is not SpreadMode.HARD:
            return None
        return self.pack_present(pod)

    def constraint_mask(self, pod: Pod) -> BoolArray | None:
        """Hard spread and hard pack together, or None when neither restricts the pod."""
        spread, pack = self.spread_ok(pod), self.pack_ok(pod)
        if spread is None or pack is None:
            return spread if pack is None else pack
        return spread & pack

    def fit_mask(self, pod: Pod, demand: IntArray | None = None) -> BoolArray:
        d = self.demand(pod) if demand is None else demand
        mask = self.eligible_mask(pod) & (self.free >= d).all(axis=1)
        ok = self.constraint_mask(pod)
        return mask if ok is None else mask & ok

    def fits(self, pod: Pod, node: int) -> bool:
        if not self.eligible_mask(pod)[node] or not (self.free[node] >= self.demand(pod)).all():
            return False
        spread = pod.spread
        if spread is not None and spread.mode is SpreadMode.HARD:
            counts = self._counts(pod.fleet, spread.topology_key)
            return bool(counts[self._domains(spread.topology_key)[node]] < spread.max_per_domain)
        pack = pod.pack
        if pack is not None and pack.mode is SpreadMode.HARD:
            present = self._present.get((pod.fleet, pack.topology_key))
            return not present or int(self._domains(pack.topology_key)[node]) in present
        return True

    def _rebucket(self, node: int, before: int) -> None:
        after = int(self.free[node, 0])
        if after != before:
            levels = self.buckets[self.part[node]]
            del levels[before][node]
            levels[after][node] = None

    def under_soft_cap(self, pod: Pod, node: int) -> bool:
        spread = pod.spread
        if spread is None or spread.mode is not SpreadMode.SOFT:
            return True
        counts = self._counts(pod.fleet, spread.topology_key)
        return bool(counts[self._domains(spread.topology_key)[node]] < spread.max_per_domain)

    def place(self, pod: Pod, node: int) -> None:
        before = int(self.free[node, 0])
        self.free[node] -= self.demand(pod)
        self._rebucket(node, before)
        self.pods_on[node][pod.name] = pod
        self.where[pod.name] = node
        for key in self._fleet_keys.get(pod.fleet, ()):
            domain = int(self._domains(key)[node])
            counts = self._counts(pod.fleet, key)
            counts[domain] += 1
            if counts[domain] == 1:
                self._present[(pod.fleet, key)].add(domain)
                self._candidates.pop((pod.fleet, key), None)
        self.journal.append(("place", pod, node))

    def remove(self, pod: Pod) -> int:
        node = self.where.pop(pod.name)
        before = int(self.free[node, 0])
        self.free[node] += self.demand(pod)
        self._rebucket(node, before)
        self.removals += 1
        del self.pods_on[node][pod.name]
        for key in self._fleet_keys.get(pod.fleet, ()):
            domain = int(self._domains(key)[node])
            counts = self._counts(pod.fleet, key)
            counts[domain] -= 1
            if counts[domain] == 0:
                self._present[(pod.fleet, key)].discard(domain)
                self._candidates.pop((pod.fleet, key), None)
        self.journal.append(("remove", pod, node))
        return node

    def mark(self) -> int:
        return len(self.journal)

    def undo(self, mark: int) -> None:
        """Roll back every place/remove since `mark` (a gang that could not be completed)."""
        while len(self.journal) > mark:
            op, pod, node = self.journal.pop()
            if op == "place":
                self.remove(pod)
            else:
                self.place(pod, node)
            self.journal.pop()

    def assignment(self) -> dict[str, str]:
        return {pod: self.names[i] for pod, i in self.where.items()}
