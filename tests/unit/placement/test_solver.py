"""The CP-SAT solver on hand-made cases with known optima, and on the scale the issue asks for."""

from __future__ import annotations

import time

import pytest
from ortools.sat.python import cp_model

from flotilla.placement.bench.scenarios import ScenarioSpec, generate
from flotilla.placement.cpsat.classes import reduce_snapshot
from flotilla.placement.cpsat.decode import hint_from_assignment
from flotilla.placement.cpsat.model import build_model, gpu_levels
from flotilla.placement.cpsat.solver import solve
from flotilla.placement.examples import gpu_node, hard_spread, soft_spread, tp_pod
from flotilla.placement.heuristics.bestfit import greedy_assignment, schedule_best_fit
from flotilla.placement.heuristics.kubedefault import schedule_default
from flotilla.placement.rules.metrics import evaluate, lex_key, violations
from flotilla.placement.types.plan import Status
from flotilla.placement.types.snapshot import Snapshot


def test_gpu_levels_need_a_divisibility_chain() -> None:
    assert gpu_levels({0, 1, 2, 4, 8}) == ([1, 2, 4, 8], True)
    assert gpu_levels({1, 3, 6}) == ([1, 3, 6], True)
    assert gpu_levels({2, 3}) == ([1], False)


@pytest.mark.parametrize("approach", ["classes", "direct"])
def test_places_the_tp8_that_default_scheduling_strands(approach: str) -> None:
    pods = (*tuple(tp_pod(f"small-{i}", 1, fleet="small") for i in range(8)), tp_pod("big", 8))
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), pending=pods)
    default = evaluate(snap, schedule_default(snap))
    plan = solve(snap, 2.0, approach=approach)  # type: ignore[arg-type]
    ours = evaluate(snap, plan)
    assert default.placed_by_tier == {0: 8}
    assert ours.placed_by_tier == {0: 9}
    assert plan.status is Status.OPTIMAL
    assert ours.opened_nodes == 2 and ours.stranded_gpus == 0
    assert violations(snap, plan) == []


def test_tiers_are_lexicographic_highest_first() -> None:
    # one node: a tier-1 TP8 beats eight tier-0 TP1 pods even though it places fewer pods
    pods = (*(tp_pod(f"low-{i}", 1, tier=0, fleet="low") for i in range(8)), tp_pod("high", 8, tier=1))
    snap = Snapshot(nodes=(gpu_node("a"),), pending=pods)
    plan = solve(snap, 2.0)
    assert [b.pod for b in plan.bindings] == ["high"]
    assert plan.status is Status.OPTIMAL
    assert plan.stages[0].name == "placed tier>=1" and plan.stages[0].objective == 1


def test_gang_is_all_or_nothing() -> None:
    gang = tuple(tp_pod(f"g-{i}", 8, tier=1, fleet="g", gang="g", gang_size=3) for i in range(3))
    fits = tuple(tp_pod(f"h-{i}", 8, tier=0, fleet="h", gang="h", gang_size=2) for i in range(2))
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), pending=(*gang, *fits))
    plan = solve(snap, 2.0)
    assert {b.pod for b in plan.bindings} == {"h-0", "h-1"}
    assert plan.status is Status.OPTIMAL
    assert violations(snap, plan) == []


def test_hard_spread_caps_and_soft_spread_penalises() -> None:
    nodes = (gpu_node("a"), gpu_node("b"))
    hard = tuple(tp_pod(f"r-{i}", 1, fleet="r", spread=hard_spread()) for i in range(3))
    plan = solve(Snapshot(nodes=nodes, pending=hard), 2.0)
    assert len(plan.bindings) == 2 and len({b.node for b in plan.bindings}) == 2
    soft = tuple(tp_pod(f"s-{i}", 1, fleet="s", spread=soft_spread()) for i in range(3))
    snap = Snapshot(nodes=nodes, pending=soft)
    plan = solve(snap, 2.0)
    assert len(plan.bindings) == 3
    assert evaluate(snap, plan).soft_spread_excess == 1


def test_zone_spread() -> None:
    zone = "topology.kubernetes.io/zone"
    nodes = tuple(gpu_node(f"n{i}", labels=((zone, f"z{i % 2}"),)) for i in range(4))
    pods = tuple(tp_pod(f"r-{i}", 1, fleet="r", spread=hard_spread(2, zone)) for i in range(6))
    snap = Snapshot(nodes=nodes, pending=pods)
    plan = solve(snap, 2.0)
    assert len(plan.bindings) == 4
    assert plan.status is Status.OPTIMAL
    assert violations(snap, plan) == []


def test_higher_tier_preempts_lower_tier_but_not_equal_tiers() -> None:
    bound = (
        tp_pod("low", 8, tier=0, node="a"),
        tp_pod("same", 8, tier=2, node="b"),
    )
    pending = (tp_pod("vip", 8, tier=2), tp_pod("other", 8, tier=2))
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), bound=bound, pending=pending)
    plan = solve(snap, 2.0)
    assert [e.pod for e in plan.evictions] == ["low"]
    assert len(plan.bindings) == 1 and plan.bindings[0].node == "a"
    assert plan.moves == ()
    assert violations(snap, plan) == []


def test_moves_a_running_pod_to_make_room_for_tp8() -> None:
    # a TP4 runs on each node; moving one lets the pending TP8 in without evicting anybody
    bound = (tp_pod("x", 4, node="a"), tp_pod("y", 4, node="b"))
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), bound=bound, pending=(tp_pod("big", 8),))
    plan = solve(snap, 2.0, moves=True)
    assert len(plan.bindings) == 1 and len(plan.moves) == 1 and plan.evictions == ()
    assert plan.status is Status.OPTIMAL
    assert violations(snap, plan) == []
    # without moves the same-tier TP8 cannot run: running pods are protected
    assert solve(snap, 2.0, moves=False).unplaced == ("big",)


def test_unmanaged_pods_are_never_disrupted() -> None:
    bound = (tp_pod("system", 8, tier=0, node="a", managed=False),)
    snap = Snapshot(nodes=(gpu_node("a"),), bound=bound, pending=(tp_pod("vip", 8, tier=5),))
    plan = solve(snap, 1.0)
    assert plan.evictions == () and plan.unplaced == ("vip",)


def test_greedy_hint_is_feasible_in_the_count_model() -> None:
    for seed in range(3):
        snap = generate(ScenarioSpec("t", 24, 3, 1.0, 0.5, seed, constraints=True))
        red = reduce_snapshot(snap, allow_moves=True)
        cm = build_model(red)
        variables = {
            v.name: v for v in [*cm.x.values(), *cm.y.values(), *cm.units.values(), *cm.moved.values()]
        }
        for name, value in hint_from_assignment(cm, greedy_assignment(snap)).items():
            cm.model.add_hint(variables[name], value)
        solver = cp_model.CpSolver()
        solver.parameters.fix_variables_to_their_hinted_value = True
        solver.parameters.max_time_in_seconds = 10
        solver.parameters.num_workers = 1
        assert solver.solve(cm.model) in (cp_model.OPTIMAL, cp_model.FEASIBLE)


def test_budget_is_honoured_and_never_worse_than_best_fit() -> None:
    snap = generate(ScenarioSpec("t", 256, 4, 1.05, 0.5, 7, constraints=True))
    started = time.perf_counter()
    plan = solve(snap, 0.5)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5 + 0.35  # greedy + model build overrun bounded on a shared 2-core machine
    assert violations(snap, plan) == []
    tiers = snap.all_tiers()
    assert lex_key(evaluate(snap, plan), tiers) >= lex_key(evaluate(snap, schedule_best_fit(snap)), tiers)


def test_scale_1000_nodes_5000_pods() -> None:
    # How fast this scale is certified (about 0.3 s) is measured by `flotilla bench placement`, not
    # asserted here: a loaded machine would make a timed assertion flaky. What must hold at any speed:
    # the model certifies this scale given time, and a 1 s budget still returns a valid plan that is
    # never worse than the best-fit heuristic.
    snap = generate(ScenarioSpec("scale", 1000, 3, 1.0, 0.0, 1, pods=5000))
    assert len(snap.nodes) == 1000 and len(snap.pending) == 5000
    tiers = tuple(sorted({p.tier for p in snap.pending}, reverse=True))
    certified = solve(snap, 20.0)
    assert certified.status is Status.OPTIMAL
    assert violations(snap, certified) == []
    quick = solve(snap, 1.0)
    assert quick.status in (Status.OPTIMAL, Status.FEASIBLE)
    assert violations(snap, quick) == []
    best_fit = lex_key(evaluate(snap, schedule_best_fit(snap)), tiers)
    assert lex_key(evaluate(snap, quick), tiers) >= best_fit


def test_running_pods_give_way_only_to_higher_tiers() -> None:
    # evicting the running tier-0 TP8 would let two pending tier-0 TP4s in (one more tier-0 pod),
    # but a pod of tier 0 may only be evicted for a higher tier; the tier-1 pod fits on node b
    bound = (tp_pod("running", 8, tier=0, node="a"),)
    pending = (
        tp_pod("p-0", 4, tier=0, fleet="p"),
        tp_pod("p-1", 4, tier=0, fleet="p"),
        tp_pod("vip", 8, tier=1),
    )
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), bound=bound, pending=pending)
    plan = solve(snap, 2.0, moves=False)
    assert plan.evictions == ()
    assert [(b.pod, b.node) for b in plan.bindings] == [("vip", "b")]
    assert plan.status is Status.OPTIMAL
