"""Vectorised cluster state for the heuristics: one numpy row per node, fit checks for all nodes at once.

The heuristics (kube-scheduler re-implementation, best-fit, the solver's warm start) place thousands of
pods on a thousand nodes inside the solver's 1 s budget; a Python loop over nodes per pod is 10x too
slow, a masked numpy comparison is not. Undo is a journal, because gangs are all-or-nothing.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import numpy.typing as npt

from flotilla.placement.feasibility import eligible
from flotilla.placement.snapshot import Pod, Snapshot, SpreadMode

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
        # spread: (fleet, key) -> (domain index per node, count per domain)
        self._domain_of: dict[str, IntArray] = {}
        self._spread_counts: dict[tuple[str, str], IntArray] = {}
        self._fleet_keys: dict[str, set[str]] = defaultdict(set)
        self.journal: list[tuple[str, Pod, int]] = []
        # part -> free GPUs -> nodes (insertion-ordered sets): best-fit scans a few buckets, not all nodes
        self.part = partition if partition is not None else [0] * len(self.names)
        self.buckets: dict[int, dict[int, dict[int, None]]] = defaultdict(lambda: defaultdict(dict))
        for i, gpus in enumerate(self.free[:, 0].tolist()):
            self.buckets[self.part[i]][gpus][i] = None
        self.removals = 0
        for pod in (*snapshot.bound, *snapshot.pending):
            if pod.spread is not None:
                self._fleet_keys[pod.fleet].add(pod.spread.topology_key)
        for pod in snapshot.bound:
            if pod.node in self.index:
                self.place(pod, self.index[pod.node])
        self.journal.clear()

    @staticmethod
    def demand(pod: Pod) -> IntArray:
        return np.array(pod.demand.as_tuple(), dtype=np.int64)

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

    def fit_mask(self, pod: Pod, demand: IntArray | None = None) -> BoolArray:
        d = self.demand(pod) if demand is None else demand
        mask = self.eligible_mask(pod) & (self.free >= d).all(axis=1)
        ok = self.spread_ok(pod)
        return mask if ok is None else mask & ok

    def fits(self, pod: Pod, node: int) -> bool:
        if not self.eligible_mask(pod)[node] or not (self.free[node] >= self.demand(pod)).all():
            return False
        spread = pod.spread
        if spread is not None and spread.mode is SpreadMode.HARD:
            counts = self._counts(pod.fleet, spread.topology_key)
            return bool(counts[self._domains(spread.topology_key)[node]] < spread.max_per_domain)
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
            self._counts(pod.fleet, key)[self._domains(key)[node]] += 1
        self.journal.append(("place", pod, node))

    def remove(self, pod: Pod) -> int:
        node = self.where.pop(pod.name)
        before = int(self.free[node, 0])
        self.free[node] += self.demand(pod)
        self._rebucket(node, before)
        self.removals += 1
        del self.pods_on[node][pod.name]
        for key in self._fleet_keys.get(pod.fleet, ()):
            self._counts(pod.fleet, key)[self._domains(key)[node]] -= 1
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
