"""Pack in the count model: the topology domains a pack fleet occupies, its bound pods included.

`spec.placement.strategy: pack` (the CRD's default) asks for a fleet's replicas on as few nodes (or
zones, per its topology key) as possible: tensor-parallel replicas of one model then share NVLink
islands, and whole nodes stay free for others. Without this term the model only counted *fresh*
nodes opened, so filling already-used nodes was free and a fleet's replicas scattered over them.

Soft pack adds, per fleet, the domains it uses to the last stage's objective (after tiers and
disruption, so it never costs a higher-tier pod or an eviction). Hard pack is kube's required
podAffinity on the fleet: new pods go only to domains where the fleet already runs, or, when it runs
nowhere yet, all to one domain.

Counting domains: a hostname domain is a node, and nodes of one class are alike, so the fleet uses
`u` nodes of a class with `pods <= u * (pods of the fleet one node can hold)`. Classes are split by
which hostname-packed fleets run there (`classes.reduce_snapshot`), so a class where the fleet
already has pods that stay costs nothing more. Other keys (zones) get one boolean per domain.
"""

from __future__ import annotations

from collections import defaultdict

from ortools.sat.python import cp_model

from flotilla.placement.cpsat.classes import Group, NodeClass, Reduction
from flotilla.placement.types.snapshot import HOSTNAME_KEY, SpreadMode

Terms = list[cp_model.LinearExpr]
Placed = dict[tuple[int, int], cp_model.IntVar]


def fleet_terms(fleet: str, c: NodeClass, groups: list[Group], x: Placed, y: Placed) -> tuple[Terms, Terms]:
    """Pods of `fleet` on class `c`: newly placed ones, and running ones its nodes keep."""
    new: Terms = [x[g.index, c.index] for g in groups if g.rep.fleet == fleet and (g.index, c.index) in x]
    kept: Terms = []
    for p, pattern in enumerate(c.patterns):
        k = sum(k for (gi, _), k in zip(c.running, pattern, strict=True) if groups[gi].rep.fleet == fleet)
        if k:
            kept.append(k * y[c.index, p])
    return new, kept


def _per_node(fleet_groups: list[Group], c: NodeClass) -> int:
    """An upper bound on the fleet's pods one node of the class holds (its smallest pods, alone)."""
    smallest = [min(g.demand.as_tuple()[r] for g in fleet_groups) for r in range(4)]
    capacity = c.capacity.as_tuple()
    fits = [capacity[r] // smallest[r] for r in range(4) if smallest[r] > 0]
    return max(1, min(fits, default=1))


def add_pack(model: cp_model.CpModel, red: Reduction, x: Placed, y: Placed) -> list[cp_model.IntVar]:
    """Constrain hard packs; return the domain-use variables whose sum soft pack minimises."""
    used_all: list[cp_model.IntVar] = []
    for fleet, pack in red.pack.items():
        fleet_groups = [g for g in red.groups if g.rep.fleet == fleet]
        if not fleet_groups:
            continue
        hard = pack.mode is SpreadMode.HARD
        bound = red.pack_bound.get(fleet, set())
        fixed = red.pack_fixed.get(fleet, set())
        used: list[cp_model.IntVar] = []
        by_domain: dict[str, tuple[Terms, Terms]] = defaultdict(lambda: ([], []))
        for c in red.classes:
            new, kept = fleet_terms(fleet, c, red.groups, x, y)
            if not new and not kept:
                continue
            if pack.topology_key != HOSTNAME_KEY:
                domain = c.domains.get(pack.topology_key, "")
                by_domain[domain][0].extend(new)
                by_domain[domain][1].extend(kept)
                continue
            # the class's nodes share the fleet's presence (it is part of the class key)
            host = c.nodes[0].label(HOSTNAME_KEY) or ""
            if hard and bound and host not in bound and new:
                model.add(sum(new) == 0)
            if host in fixed:
                continue  # already used whatever happens
            u = model.new_int_var(0, len(c.nodes), f"pack_nodes_{fleet}_c{c.index}")
            model.add(sum(new + kept) <= _per_node(fleet_groups, c) * u)
            used.append(u)
        total = sum(len(u) for g in fleet_groups for u in g.units) + sum(len(g.running) for g in fleet_groups)
        for domain, (new, kept) in by_domain.items():
            if hard and bound and domain not in bound and new:
                model.add(sum(new) == 0)
            if domain in fixed:
                continue
            v = model.new_bool_var(f"pack_domain_{fleet}_{domain}")
            model.add(sum(new + kept) <= max(1, total) * v)
            used.append(v)
        if hard and not bound and used:
            # runs nowhere yet: all of it in one domain
            model.add(sum(used) <= 1)
        used_all.extend(used)
    return used_all
