"""The CP-SAT model over counts: pods per (group, node class), nodes per (class, keep pattern).

Following Christensen et al. (2025) but on counts instead of pod x node booleans, so a 1,000-node
cluster with a few node shapes stays small. GPU capacity is exact when the GPU sizes form a
divisibility chain (1, 2, 4, 8): items of size >= s fit in bins iff, for every size s, their GPUs fit
in the bins' free GPUs rounded down to multiples of s (largest-first packing never wastes aligned
space). CPU, memory and pod slots are aggregated per class (a relaxation the decoder checks). The
objective is lexicographic, one `Stage` per call: pods placed per tier (highest first), then
disruption (evict 1, move 2), then fresh nodes opened plus soft-spread excess and the topology
domains pack fleets occupy (`packmodel`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

from ortools.sat.python import cp_model

from flotilla.placement.cpsat.classes import Reduction, class_eligible
from flotilla.placement.cpsat.packmodel import add_pack
from flotilla.placement.types.snapshot import HOSTNAME_KEY, SpreadMode


def gpu_levels(sizes: set[int]) -> tuple[list[int], bool]:
    """The GPU sizes to write level constraints for, and whether they form a divisibility chain.

    Without a chain only the plain GPU sum (level = smallest size) is a valid necessary condition.
    """
    positive = sorted(s for s in sizes if s > 0)
    chain = all(b % a == 0 for a, b in pairwise(positive))
    return (positive if chain else [1]), chain


@dataclass
class CountModel:
    model: cp_model.CpModel
    reduction: Reduction
    x: dict[tuple[int, int], cp_model.IntVar]  # (group, class) -> pods newly placed there
    y: dict[tuple[int, int], cp_model.IntVar]  # (class, pattern) -> nodes keeping that pattern
    units: dict[int, cp_model.IntVar]  # group -> pending units placed
    moved: dict[int, cp_model.IntVar]  # group -> running pods re-placed elsewhere
    kept: dict[int, cp_model.LinearExpr]  # group -> running pods kept in place
    placed_by_tier: dict[int, cp_model.LinearExpr]
    # running pods per tier that stay placed (kept or moved), for tiers some pending pod outranks
    survivors_by_tier: dict[int, cp_model.LinearExpr]
    disruption: cp_model.LinearExpr
    consolidation: cp_model.LinearExpr
    exact_gpu: bool
    notes: list[str] = field(default_factory=list)


def build_model(red: Reduction) -> CountModel:
    # Data
    groups, classes = red.groups, red.classes
    sizes = {g.demand.gpu for g in groups}
    levels, chain = gpu_levels(sizes)
    model = cp_model.CpModel()

    # Variables: nodes of each class per keep pattern (which droppable pods each node keeps)
    y: dict[tuple[int, int], cp_model.IntVar] = {}
    for c in classes:
        for p in range(len(c.patterns)):
            y[c.index, p] = model.new_int_var(0, len(c.nodes), f"nodes_c{c.index}_p{p}")
        # every node of the class follows exactly one pattern
        model.add(sum(y[c.index, p] for p in range(len(c.patterns))) == len(c.nodes))

    # Variables: pods of each group newly placed per class, where one pod fits a node alone
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    for g in groups:
        supply = sum(len(u) for u in g.units) + (len(g.running) if g.movable else 0)
        if supply == 0:
            continue
        for c in classes:
            if class_eligible(g, c):
                cap = min(supply, len(c.nodes) * max(1, c.capacity.pods))
                x[g.index, c.index] = model.new_int_var(0, cap, f"place_g{g.index}_c{c.index}")

    units = {g.index: model.new_int_var(0, len(g.units), f"units_g{g.index}") for g in groups}
    moved = {
        g.index: model.new_int_var(0, len(g.running) if g.movable else 0, f"moved_g{g.index}") for g in groups
    }

    # Kept running pods per group, as a linear expression of the pattern counts
    kept_terms: dict[int, list[cp_model.LinearExpr]] = defaultdict(list)
    for c in classes:
        for p, pattern in enumerate(c.patterns):
            for (gi, _), k in zip(c.running, pattern, strict=True):
                if k:
                    kept_terms[gi].append(k * y[c.index, p])
    kept = {g.index: cp_model.LinearExpr.sum(kept_terms[g.index]) for g in groups}

    for g in groups:
        placed_new = sum(x[g.index, c.index] for c in classes if (g.index, c.index) in x)
        # pods placed = whole pending units (gangs all-or-nothing) + moved running pods
        model.add(placed_new == g.unit_size * units[g.index] + moved[g.index])
        # a running pod is kept, moved or evicted: never more than one of them
        model.add(kept[g.index] + moved[g.index] <= len(g.running))
        if red.max_pending_tier is None or g.tier >= red.max_pending_tier:
            # running pods are protected: only a higher tier may evict them
            model.add(kept[g.index] + moved[g.index] == len(g.running))

    for c in classes:
        xs = [(g, x[g.index, c.index]) for g in groups if (g.index, c.index) in x]
        # what each keep pattern leaves running on one node: (gpu, cpu, memory, pods)
        kept_use = [
            [
                sum(groups[gi].demand.as_tuple()[r] * k for (gi, _), k in zip(c.running, pat, strict=True))
                for r in range(4)
            ]
            for pat in c.patterns
        ]
        free = [[c.capacity.as_tuple()[r] - kept_use[p][r] for r in range(4)] for p in range(len(c.patterns))]
        # GPU capacity per size level s: pods of >= s GPUs fit in the s-aligned free GPUs
        for s in levels:
            model.add(
                sum(g.demand.gpu * v for g, v in xs if g.demand.gpu >= s)
                <= sum((free[p][0] // s) * s * y[c.index, p] for p in range(len(c.patterns)))
            )
        # CPU, memory and pod slots per class, aggregated over its nodes
        for r in (1, 2, 3):
            model.add(
                sum(g.demand.as_tuple()[r] * v for g, v in xs)
                <= sum(free[p][r] * y[c.index, p] for p in range(len(c.patterns)))
            )

    # Spread: pods of a fleet per topology domain, kept ones included
    excess: list[cp_model.IntVar] = []
    for fleet, spread in red.spread.items():
        fleet_groups = [g for g in groups if g.rep.fleet == fleet]
        per_domain: dict[str, list[cp_model.LinearExpr]] = defaultdict(list)
        per_class_cap: list[tuple[list[cp_model.LinearExpr], int]] = []
        for c in classes:
            terms: list[cp_model.LinearExpr] = [
                x[g.index, c.index] for g in fleet_groups if (g.index, c.index) in x
            ]
            for p, pattern in enumerate(c.patterns):
                k_f = sum(
                    k for (gi, _), k in zip(c.running, pattern, strict=True) if groups[gi].rep.fleet == fleet
                )
                if k_f:
                    terms.append(k_f * y[c.index, p])
            if not terms:
                continue
            if spread.topology_key == HOSTNAME_KEY:
                per_class_cap.append((terms, spread.max_per_domain * len(c.nodes)))
            elif spread.topology_key in c.domains:
                per_domain[c.domains[spread.topology_key]].extend(terms)
        caps = [(t, spread.max_per_domain) for t in per_domain.values()] + per_class_cap
        for terms, cap in caps:
            if spread.mode is SpreadMode.HARD:
                # hard spread: at most `max_per_domain` pods of the fleet per domain
                model.add(sum(terms) <= cap)
            else:
                # soft spread: pods above the cap are counted and minimised in the last stage
                e = model.new_int_var(0, 10**6, f"spread_excess_{fleet}_{len(excess)}")
                model.add(sum(terms) <= cap + e)
                excess.append(e)

    packed = add_pack(model, red, x, y)

    # Fresh nodes opened: at least the GPUs (and pods) placed on a fresh class over one node's capacity
    opened: list[cp_model.IntVar] = []
    for c in classes:
        xs_c = [(g, x[g.index, c.index]) for g in groups if (g.index, c.index) in x]
        if not c.fresh or not xs_c:
            continue
        t = model.new_int_var(0, len(c.nodes), f"opened_c{c.index}")
        if c.capacity.gpu > 0:
            model.add(t * c.capacity.gpu >= sum(g.demand.gpu * v for g, v in xs_c))
        model.add(t * max(1, c.capacity.pods) >= sum(v for _, v in xs_c))
        opened.append(t)

    placed_by_tier: dict[int, list[cp_model.LinearExpr]] = defaultdict(list)
    survivors: dict[int, list[cp_model.LinearExpr]] = defaultdict(list)
    disruption_terms: list[cp_model.LinearExpr] = []
    for g in groups:
        placed_by_tier[g.tier].append(g.unit_size * units[g.index] + moved[g.index] + kept[g.index])
        if g.running and red.max_pending_tier is not None and g.tier < red.max_pending_tier:
            survivors[g.tier].append(moved[g.index] + kept[g.index])
        # evicted (running - kept - moved) costs 1, moved costs 2
        disruption_terms.append(len(g.running) - kept[g.index] + moved[g.index])

    total_nodes = sum(len(c.nodes) for c in classes)
    notes = [] if chain else [f"GPU sizes {sorted(sizes)} are not a divisibility chain: GPU capacity relaxed"]
    return CountModel(
        model=model,
        reduction=red,
        x=x,
        y=y,
        units=units,
        moved=moved,
        kept=kept,
        placed_by_tier={t: cp_model.LinearExpr.sum(v) for t, v in placed_by_tier.items()},
        survivors_by_tier={t: cp_model.LinearExpr.sum(v) for t, v in survivors.items()},
        disruption=cp_model.LinearExpr.sum(disruption_terms),
        # a fleet's spread or pack wish outweighs opening a node
        consolidation=cp_model.LinearExpr.sum(opened)
        + (total_nodes + 1) * (cp_model.LinearExpr.sum(excess) + cp_model.LinearExpr.sum(packed)),
        exact_gpu=chain,
        notes=notes,
    )
