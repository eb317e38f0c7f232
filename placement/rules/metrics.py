"""How good a plan is, measured the same way for every policy: placed pods per tier, disruption, GPUs.

Only useful placements count: a pod of a gang counts when every pod of its gang runs, because a
partial gang (which kube-scheduler happily binds) serves nothing. `lex_key` orders plans exactly as
the solver's lexicographic objective does, so the solver can prove it never returns worse than its
own greedy warm start.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from flotilla.placement.rules.clusterstate import ClusterState
from flotilla.placement.types.plan import Plan
from flotilla.placement.types.snapshot import Pod, Snapshot


@dataclass(frozen=True)
class PlanMetrics:
    placed_by_tier: dict[int, int]  # running pods per tier after the plan (complete gangs only)
    pending_placed_by_tier: dict[int, int]
    pending_by_tier: dict[int, int]
    evictions: int
    moves: int
    stranded_gpus: int  # free GPUs on nodes that cannot host any pod left unplaced
    fragmented_gpus: int  # free GPUs on nodes that are neither empty nor full
    free_gpus: int
    opened_nodes: int  # nodes that ran nothing and now run something
    soft_spread_excess: int
    pack_domains: int = 0  # topology domains occupied by pack fleets, summed over them

    @property
    def disruption(self) -> int:
        return self.evictions + 2 * self.moves


def final_assignment(snapshot: Snapshot, plan: Plan) -> dict[str, str]:
    return plan.placement({p.name: p.node for p in snapshot.bound if p.node is not None})


def complete_pods(snapshot: Snapshot, assignment: dict[str, str]) -> list[Pod]:
    """Pods placed after the plan whose gang (if any) is complete."""
    pods = [p for p in (*snapshot.bound, *snapshot.pending) if p.name in assignment]
    gang_count = Counter(p.gang for p in pods if p.gang is not None)
    return [p for p in pods if p.gang is None or gang_count[p.gang] >= p.gang_size]


def evaluate(snapshot: Snapshot, plan: Plan) -> PlanMetrics:
    assignment = final_assignment(snapshot, plan)
    complete = complete_pods(snapshot, assignment)
    placed: dict[int, int] = defaultdict(int)
    for p in complete:
        placed[p.tier] += 1
    pending_names = {p.name for p in snapshot.pending}
    pending_placed: dict[int, int] = defaultdict(int)
    for p in complete:
        if p.name in pending_names:
            pending_placed[p.tier] += 1
    pending_by_tier = Counter(p.tier for p in snapshot.pending)

    by_name = {p.name: p for p in (*snapshot.bound, *snapshot.pending)}
    state = ClusterState(Snapshot(nodes=snapshot.nodes, pending=tuple(by_name.values())))
    for name, node in assignment.items():
        state.place(by_name[name], node)
    busy_before = {p.node for p in snapshot.bound}
    unplaced = [p for p in snapshot.pending if p.name not in assignment]
    stranded = fragmented = free_gpus = 0
    for name, info in state.nodes.items():
        free = state.free[name].gpu
        free_gpus += free
        if 0 < free < info.allocatable.gpu:
            fragmented += free
        if free > 0 and unplaced and not any(p.requests.gpu <= free for p in unplaced):
            stranded += free
    opened = sum(1 for name, pods in state.pods_on.items() if pods and name not in busy_before)
    return PlanMetrics(
        placed_by_tier=dict(placed),
        pending_placed_by_tier=dict(pending_placed),
        pending_by_tier=dict(pending_by_tier),
        evictions=len(plan.evictions),
        moves=len(plan.moves),
        stranded_gpus=stranded,
        fragmented_gpus=fragmented,
        free_gpus=free_gpus,
        opened_nodes=opened,
        soft_spread_excess=state.soft_spread_excess(),
        pack_domains=state.pack_domains(),
    )


def lex_key(metrics: PlanMetrics, tiers: tuple[int, ...]) -> tuple[int, ...]:
    """Bigger is better: placed per tier (highest first), less disruption, soft spread and pack, fewer
    nodes opened."""
    return (
        *(metrics.placed_by_tier.get(t, 0) for t in tiers),
        -metrics.disruption,
        -metrics.soft_spread_excess - metrics.pack_domains,
        -metrics.opened_nodes,
    )


def violations(snapshot: Snapshot, plan: Plan) -> list[str]:
    """Every hard rule a plan breaks: capacity, filters, hard spread and pack, gangs, protected pods."""
    problems: list[str] = []
    assignment = final_assignment(snapshot, plan)
    by_name = {p.name: p for p in (*snapshot.bound, *snapshot.pending)}
    state = ClusterState(Snapshot(nodes=snapshot.nodes, bound=(), pending=tuple(by_name.values())))
    # pods that stay go first, so hard spread caps are checked against them
    order = sorted(assignment.items(), key=lambda item: (by_name[item[0]].node != item[1], item[0]))
    for name, node in order:
        pod = by_name[name]
        if node not in state.nodes:
            problems.append(f"{name} on unknown node {node}")
            continue
        moved_or_new = pod.node != node
        if moved_or_new and not state.fits(pod, node):
            problems.append(f"{name} does not fit on {node}")
        state.place(pod, node)
    for name, free in state.free.items():
        if min(free.as_tuple()) < 0:
            problems.append(f"{name} over capacity: {free}")
    for p in snapshot.bound:
        if (p.name not in assignment or assignment[p.name] != p.node) and not p.managed:
            problems.append(f"{p.name} is not managed by flotilla but was disrupted")
    pending_gangs = Counter(p.gang for p in snapshot.pending if p.gang is not None)
    placed_gangs = Counter(p.gang for p in snapshot.pending if p.gang is not None and p.name in assignment)
    for gang, placed in placed_gangs.items():
        if placed != pending_gangs[gang]:
            problems.append(f"gang {gang}: {placed} of {pending_gangs[gang]} pods placed")
    return problems
