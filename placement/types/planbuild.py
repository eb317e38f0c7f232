"""Turn a final pod -> node assignment into a Plan: bindings, evictions and moves against the snapshot."""

from __future__ import annotations

from flotilla.placement.types.plan import Binding, Eviction, Move, Plan, Stage, Status
from flotilla.placement.types.snapshot import Snapshot


def plan_from_assignment(
    snapshot: Snapshot,
    assignment: dict[str, str],
    *,
    status: Status,
    approach: str,
    seconds: float,
    stages: tuple[Stage, ...] = (),
    notes: tuple[str, ...] = (),
) -> Plan:
    bindings = tuple(Binding(p.name, assignment[p.name]) for p in snapshot.pending if p.name in assignment)
    evictions: list[Eviction] = []
    moves: list[Move] = []
    for p in snapshot.bound:
        if p.node is None:
            continue
        target = assignment.get(p.name)
        if target is None:
            evictions.append(Eviction(p.name, p.node, "preempted by a higher tier"))
        elif target != p.node:
            moves.append(Move(p.name, p.node, target))
    return Plan(
        bindings=bindings,
        evictions=tuple(evictions),
        moves=tuple(moves),
        unplaced=tuple(p.name for p in snapshot.pending if p.name not in assignment),
        status=status,
        approach=approach,
        stages=stages,
        seconds=seconds,
        notes=notes,
    )
