"""Between counts and pods: the greedy plan as a hint for the count model, and a count solution as pods.

Decoding is where the relaxed parts of the model (CPU, memory and pod slots aggregated per class,
hostname spread per class) meet real nodes: pods are packed largest first, best fit, into their
class's nodes, which realises the GPU counts exactly for divisible sizes. Anything that does not fit
is tried on any node, else its whole unit is dropped and the decode reports it was not realised, so
the solver never claims optimality for a plan it could not build.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from flotilla.placement.cpsat.classes import Reduction
from flotilla.placement.cpsat.model import CountModel
from flotilla.placement.heuristics.bestfit import best_node
from flotilla.placement.rules.faststate import FastState
from flotilla.placement.types.snapshot import Pod, Snapshot


def hint_from_assignment(cm: CountModel, assignment: dict[str, str]) -> dict[str, int]:
    """Variable name -> value of a per-pod plan (the greedy one) in the count model."""
    red = cm.reduction
    group_of: dict[str, int] = {}
    unit_of: dict[str, str] = {}
    for g in red.groups:
        for unit in g.units:
            for pod in unit:
                group_of[pod.name] = g.index
                unit_of[pod.name] = pod.unit
        for pod in g.running:
            group_of[pod.name] = g.index
    running_node = {p.name: p.node for g in red.groups for p in g.running}
    class_of = {n.name: c.index for c in red.classes for n in c.nodes}
    hint: dict[str, int] = {}
    x: Counter[tuple[int, int]] = Counter()
    y: Counter[tuple[int, int]] = Counter()
    moved: Counter[int] = Counter()
    placed_units: dict[int, set[str]] = defaultdict(set)
    for c in red.classes:
        for node in c.nodes:
            kept = Counter(
                group_of[p.name]
                for p in red.droppable.get(node.name, [])
                if assignment.get(p.name) == node.name
            )
            pattern = tuple(kept.get(gi, 0) for gi, _ in c.running)
            if pattern in c.patterns:
                y[c.index, c.patterns.index(pattern)] += 1
    for name, target in assignment.items():
        gi = group_of.get(name)
        if gi is None or target not in class_of:
            continue
        if name in unit_of:
            x[gi, class_of[target]] += 1
            placed_units[gi].add(unit_of[name])
        elif running_node.get(name, target) != target:
            x[gi, class_of[target]] += 1
            moved[gi] += 1
    for key, var in cm.x.items():
        hint[var.name] = x.get(key, 0)
    for key, var in cm.y.items():
        hint[var.name] = y.get(key, 0)
    for gi, var in cm.units.items():
        hint[var.name] = len(placed_units.get(gi, ()))
    for gi, var in cm.moved.items():
        hint[var.name] = moved.get(gi, 0)
    return hint


@dataclass
class Decoded:
    assignment: dict[str, str]
    realised: bool
    dropped_units: int


def decode(
    snapshot: Snapshot,
    *,
    cm: CountModel,
    x: dict[tuple[int, int], int],
    y: dict[tuple[int, int], int],
    units: dict[int, int],
    moved: dict[int, int],
) -> Decoded:
    red: Reduction = cm.reduction
    class_of = {node.name: c.index for c in red.classes for node in c.nodes}
    state = FastState(snapshot, partition=[class_of[n.name] for n in snapshot.nodes])
    # keep patterns: which droppable pods each node keeps
    dropped: dict[int, list[Pod]] = defaultdict(list)
    group_of = {p.name: g.index for g in red.groups for p in g.running}
    for c in red.classes:
        patterns = [p for p, _ in enumerate(c.patterns) for _ in range(y.get((c.index, p), 0))]
        for node, p in zip(c.nodes, patterns, strict=False):
            keep = dict(zip((gi for gi, _ in c.running), c.patterns[p], strict=True))
            for pod in red.droppable.get(node.name, []):
                gi = group_of[pod.name]
                if keep.get(gi, 0) > 0:
                    keep[gi] -= 1
                else:
                    state.remove(pod)
                    dropped[gi].append(pod)
    # the pods each group places, whole units first, then moved running pods, split over classes
    items: dict[int, list[tuple[Pod, str]]] = defaultdict(list)
    for g in red.groups:
        queue: list[tuple[Pod, str]] = [(p, p.unit) for u in g.units[: units.get(g.index, 0)] for p in u]
        queue += [(p, f"move/{p.name}") for p in dropped[g.index][: moved.get(g.index, 0)]]
        for c in red.classes:
            k = x.get((g.index, c.index), 0)
            items[c.index].extend(queue[:k])
            queue = queue[k:]
    failed: set[str] = set()
    placed_by_unit: dict[str, list[Pod]] = defaultdict(list)
    for c in red.classes:
        todo = sorted(items[c.index], key=lambda it: (-it[0].requests.gpu, -it[0].requests.cpu_m))
        for pod, unit in todo:
            if unit in failed:
                continue
            if pod.node is not None and pod.name in state.where:
                continue
            index = best_node(state, pod, part=c.index)
            if index is None:
                index = best_node(state, pod)
            if index is None:
                failed.add(unit)
                continue
            state.place(pod, index)
            placed_by_unit[unit].append(pod)
    for unit in failed:
        for pod in placed_by_unit.get(unit, []):
            state.remove(pod)
    return Decoded(assignment=state.assignment(), realised=not failed, dropped_units=len(failed))
