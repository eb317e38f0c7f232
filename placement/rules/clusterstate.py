"""A mutable what-if view of the cluster: free capacity, spread and pack counts, one node at a time.

The policies decide on the vectorised `faststate.FastState`; this plain, per-node version is the
reference that `metrics` (and the property tests) replay every policy's plan through, so a plan's
validity and quality are judged by code independent of the state the heuristics used to build it.
"""

from __future__ import annotations

from collections import defaultdict

from flotilla.placement.rules.feasibility import eligible
from flotilla.placement.types.snapshot import Node, Pod, Resources, Snapshot, SpreadMode


class ClusterState:
    def __init__(self, snapshot: Snapshot) -> None:
        self.nodes: dict[str, Node] = {n.name: n for n in snapshot.nodes}
        self.free: dict[str, Resources] = {n.name: n.allocatable for n in snapshot.nodes}
        self.pods_on: dict[str, dict[str, Pod]] = {n.name: {} for n in snapshot.nodes}
        self.where: dict[str, str] = {}
        # (fleet, topology key, domain) -> pods of the fleet there, for spread caps
        self.spread_count: dict[tuple[str, str, str], int] = defaultdict(int)
        self._spread_keys: dict[str, set[str]] = defaultdict(set)
        for pod in (*snapshot.bound, *snapshot.pending):
            if pod.spread is not None:
                self._spread_keys[pod.fleet].add(pod.spread.topology_key)
            if pod.pack is not None:
                self._spread_keys[pod.fleet].add(pod.pack.topology_key)
        for pod in snapshot.bound:
            if pod.node in self.nodes:
                self.place(pod, pod.node)

    def domains(self, fleet: str, node: str) -> list[tuple[str, str, str]]:
        n = self.nodes[node]
        return [(fleet, key, n.label(key) or "") for key in self._spread_keys.get(fleet, ())]

    def fits(self, pod: Pod, node: str) -> bool:
        """Filters, free resources and hard spread caps."""
        n = self.nodes[node]
        if not pod.demand.fits_in(self.free[node]) or not eligible(pod, n):
            return False
        spread = pod.spread
        if spread is not None and spread.mode is SpreadMode.HARD:
            domain = (pod.fleet, spread.topology_key, n.label(spread.topology_key) or "")
            if self.spread_count[domain] >= spread.max_per_domain:
                return False
        pack = pod.pack
        if pack is not None and pack.mode is SpreadMode.HARD:
            # kube's required podAffinity on the fleet: once it runs somewhere, only there
            domains = self.occupied(pod.fleet, pack.topology_key)
            if domains and (n.label(pack.topology_key) or "") not in domains:
                return False
        return True

    def occupied(self, fleet: str, key: str) -> set[str]:
        """Domains of `key` where `fleet` runs (keys of its spread or pack only)."""
        return {d for (f, k, d), count in self.spread_count.items() if f == fleet and k == key and count > 0}

    def pack_domains(self) -> int:
        """Topology domains occupied by pack fleets, summed over them (what soft pack minimises)."""
        keys = {
            (p.fleet, p.pack.topology_key) for pods in self.pods_on.values() for p in pods.values() if p.pack
        }
        return sum(len(self.occupied(fleet, key)) for fleet, key in keys)

    def place(self, pod: Pod, node: str) -> None:
        self.free[node] = self.free[node] - pod.demand
        self.pods_on[node][pod.name] = pod
        self.where[pod.name] = node
        for domain in self.domains(pod.fleet, node):
            self.spread_count[domain] += 1

    def remove(self, pod: Pod) -> str:
        node = self.where.pop(pod.name)
        self.free[node] = self.free[node] + pod.demand
        del self.pods_on[node][pod.name]
        for domain in self.domains(pod.fleet, node):
            self.spread_count[domain] -= 1
        return node

    def soft_spread_excess(self) -> int:
        """Pods above their fleet's soft spread cap, summed over domains."""
        caps: dict[tuple[str, str], int] = {}
        for pods in self.pods_on.values():
            for p in pods.values():
                if p.spread is not None and p.spread.mode is SpreadMode.SOFT:
                    caps[(p.fleet, p.spread.topology_key)] = p.spread.max_per_domain
        return sum(
            max(0, count - caps[(fleet, key)])
            for (fleet, key, _), count in self.spread_count.items()
            if (fleet, key) in caps
        )
