"""Symmetry reduction: interchangeable pods become groups, interchangeable nodes become classes.

Pods of one fleet with equal requests and constraints are interchangeable, and so are nodes with
equal free capacity, relevant labels, taints and droppable pods. The CP-SAT model then counts pods
per (group, class) and nodes per (class, keep pattern) instead of deciding pod x node booleans: a
1,000-node cluster of a few GPU shapes becomes a handful of classes. `per_node=True` puts every node
in its own class, which is the direct model the benchmark compares against.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from flotilla.placement.rules.feasibility import eligible
from flotilla.placement.types.snapshot import HOSTNAME_KEY, Node, Pack, Pod, Resources, Snapshot, Spread

MAX_KEEP_PATTERNS = 64


@dataclass
class Group:
    """Interchangeable pods: pending units of one size, plus running pods that may move into them."""

    index: int
    key: tuple[object, ...]
    rep: Pod
    unit_size: int
    units: list[list[Pod]] = field(default_factory=list)  # pending, each all-or-nothing
    running: list[Pod] = field(default_factory=list)  # droppable running pods of this shape
    movable: bool = False

    @property
    def tier(self) -> int:
        return self.rep.tier

    @property
    def demand(self) -> Resources:
        return self.rep.demand


@dataclass
class NodeClass:
    index: int
    nodes: list[Node]
    capacity: Resources  # allocatable minus pods that cannot be dropped
    domains: dict[str, str]  # topology key -> domain (hostname excluded unless the class is one node)
    running: tuple[tuple[int, int], ...]  # (group index, droppable pods of it per node)
    patterns: list[tuple[int, ...]] = field(default_factory=list)  # kept count per `running` entry
    restricted: bool = False
    fresh: bool = False  # its nodes run nothing at all


@dataclass
class Reduction:
    groups: list[Group]
    classes: list[NodeClass]
    fixed: dict[str, Resources]  # node -> demand of pods that stay whatever happens
    droppable: dict[str, list[Pod]]  # node -> running pods the solver may evict or move
    spread: dict[str, Spread]  # fleet -> its spread
    max_pending_tier: int | None
    pack: dict[str, Pack] = field(default_factory=dict)  # fleet -> its pack preference
    # pack fleet -> domains (of its topology key) where it has bound pods: any, and ones that stay
    pack_bound: dict[str, set[str]] = field(default_factory=dict)
    pack_fixed: dict[str, set[str]] = field(default_factory=dict)


def group_key(pod: Pod, unit_size: int) -> tuple[object, ...]:
    return (
        pod.fleet,
        pod.demand.as_tuple(),
        pod.tier,
        pod.tolerations,
        pod.node_selector,
        pod.spread,
        pod.pack,
        unit_size,
    )


def _relevant_label_keys(snapshot: Snapshot) -> set[str]:
    keys: set[str] = set()
    for pod in (*snapshot.pending, *snapshot.bound):
        keys.update(k for k, _ in pod.node_selector)
        if pod.spread is not None:
            keys.add(pod.spread.topology_key)
        if pod.pack is not None:
            keys.add(pod.pack.topology_key)
    return keys


def _patterns(counts: list[int]) -> tuple[list[tuple[int, ...]], bool]:
    """Every sub-multiset of the droppable pods (kept counts), or a restricted few if too many."""
    total = 1
    for c in counts:
        total *= c + 1
    if total <= MAX_KEEP_PATTERNS:
        return [tuple(p) for p in itertools.product(*(range(c + 1) for c in counts))], False
    keep_all = tuple(counts)
    few = {keep_all, tuple(0 for _ in counts)}
    for i in range(len(counts)):
        few.add(tuple(0 if j == i else c for j, c in enumerate(counts)))
        few.add(tuple(c if j == i else 0 for j, c in enumerate(counts)))
    return sorted(few, reverse=True), True


def reduce_snapshot(snapshot: Snapshot, *, allow_moves: bool = True, per_node: bool = False) -> Reduction:
    pending_tiers = [p.tier for p in snapshot.pending]
    max_pending = max(pending_tiers) if pending_tiers else None
    groups: dict[tuple[object, ...], Group] = {}

    def group_for(pod: Pod, unit_size: int, movable: bool) -> Group:
        key = group_key(pod, unit_size) if movable or unit_size else ("evict-only", *_evict_key(pod))
        g = groups.get(key)
        if g is None:
            g = Group(index=len(groups), key=key, rep=pod, unit_size=unit_size)
            groups[key] = g
        return g

    units: dict[str, list[Pod]] = defaultdict(list)
    for pod in snapshot.pending:
        units[pod.unit].append(pod)
    for unit in units.values():
        group_for(unit[0], len(unit), True).units.append(unit)

    spreads: dict[str, Spread] = {}
    for pod in (*snapshot.bound, *snapshot.pending):
        if pod.spread is not None:
            spreads[pod.fleet] = pod.spread

    packs: dict[str, Pack] = {}
    for pod in (*snapshot.bound, *snapshot.pending):
        if pod.pack is not None:
            packs[pod.fleet] = pod.pack

    node_by_name = {n.name: n for n in snapshot.nodes}
    node_names = set(node_by_name)
    fixed: dict[str, Resources] = defaultdict(Resources)
    pack_bound: dict[str, set[str]] = defaultdict(set)
    pack_fixed: dict[str, set[str]] = defaultdict(set)
    # hostname-packed fleets present on a node (any pod, pods that stay): such nodes are not alike
    host_present: dict[str, set[str]] = defaultdict(set)
    host_fixed: dict[str, set[str]] = defaultdict(set)
    droppable: dict[str, list[Pod]] = defaultdict(list)
    running_groups: dict[str, Counter[int]] = defaultdict(Counter)
    for pod in snapshot.bound:
        if pod.node not in node_names:
            continue
        can_drop = (
            pod.managed
            and pod.gang is None
            and max_pending is not None
            and (pod.tier < max_pending or allow_moves)
        )
        pack = packs.get(pod.fleet)
        if pack is not None:
            domain = node_by_name[pod.node].label(pack.topology_key) or ""
            pack_bound[pod.fleet].add(domain)
            if not can_drop:
                pack_fixed[pod.fleet].add(domain)
            if pack.topology_key == HOSTNAME_KEY:
                host_present[pod.node].add(pod.fleet)
                if not can_drop:
                    host_fixed[pod.node].add(pod.fleet)
        if not can_drop:
            fixed[pod.node] = fixed[pod.node] + pod.demand
            continue
        g = group_for(pod, 1, allow_moves) if allow_moves else group_for(pod, 0, False)
        g.movable = allow_moves
        g.running.append(pod)
        droppable[pod.node].append(pod)
        running_groups[pod.node][g.index] += 1

    label_keys = _relevant_label_keys(snapshot) - {HOSTNAME_KEY}
    by_key: dict[tuple[object, ...], list[Node]] = defaultdict(list)
    for node in snapshot.nodes:
        capacity = node.allocatable - fixed.get(node.name, Resources())
        labels = tuple(sorted((k, node.label(k) or "") for k in label_keys))
        running = tuple(sorted(running_groups[node.name].items()))
        fresh = node.name not in fixed and not running
        packed = (tuple(sorted(host_present[node.name])), tuple(sorted(host_fixed[node.name])))
        key: tuple[object, ...] = (capacity, labels, node.taints, node.ready, running, packed, fresh)
        if per_node:
            key = (node.name, *key)
        by_key[key].append(node)

    classes: list[NodeClass] = []
    for key, nodes in by_key.items():
        capacity = nodes[0].allocatable - fixed.get(nodes[0].name, Resources())
        running = tuple(sorted(running_groups[nodes[0].name].items()))
        patterns, restricted = _patterns([c for _, c in running])
        domains = {k: nodes[0].label(k) or "" for k in label_keys}
        if len(nodes) == 1:
            domains[HOSTNAME_KEY] = nodes[0].name
        classes.append(
            NodeClass(
                index=len(classes),
                nodes=nodes,
                capacity=capacity,
                domains=domains,
                running=running,
                patterns=patterns,
                restricted=restricted,
                fresh=bool(key[-1]),
            )
        )
    return Reduction(
        groups=list(groups.values()),
        classes=classes,
        fixed=dict(fixed),
        droppable=dict(droppable),
        spread=spreads,
        max_pending_tier=max_pending,
        pack=packs,
        pack_bound=dict(pack_bound),
        pack_fixed=dict(pack_fixed),
    )


def _evict_key(pod: Pod) -> tuple[object, ...]:
    """Pods that can only be evicted matter only by tier, size and (for spread) fleet."""
    return (pod.tier, pod.demand.as_tuple(), pod.fleet if pod.spread or pod.pack else "")


def class_eligible(group: Group, cls: NodeClass) -> bool:
    return group.demand.fits_in(cls.capacity) and eligible(group.rep, cls.nodes[0])
