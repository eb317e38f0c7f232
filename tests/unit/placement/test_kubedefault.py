"""The kube-scheduler re-implementation behaves like the default profile on cases we can check by hand."""

from __future__ import annotations

import numpy as np

from flotilla.placement.examples import gpu_node, tp_pod
from flotilla.placement.heuristics.kubedefault import num_feasible_nodes_to_find, schedule_default, scores
from flotilla.placement.rules.faststate import FastState
from flotilla.placement.rules.metrics import evaluate, violations
from flotilla.placement.types.snapshot import Snapshot, Taint, Toleration


def test_adaptive_percentage_of_nodes_to_score() -> None:
    assert num_feasible_nodes_to_find(50) == 50
    assert num_feasible_nodes_to_find(100) == 100
    assert num_feasible_nodes_to_find(1000) == 420  # 50 - 1000/125 = 42 %
    assert num_feasible_nodes_to_find(5000) == 500  # floor of 10 %
    assert num_feasible_nodes_to_find(6000) == 300  # 5 % minimum


def test_least_allocated_prefers_the_emptier_node() -> None:
    snap = Snapshot(
        nodes=(gpu_node("a"), gpu_node("b")),
        bound=(tp_pod("busy", 4, node="a"),),
    )
    state = FastState(snap)
    s = scores(state, tp_pod("new", 1), np.array([0, 1]))
    assert s[1] > s[0]
    # b after placing: cpu 12000/128000 and mem 100000/1048576 requested
    least_b = (
        np.floor((128_000 - 12_000) * 100 / 128_000) + np.floor((1_048_576 - 100_000) * 100 / 1_048_576)
    ) // 2
    balanced_b = np.floor((1 - abs(12_000 / 128_000 - 100_000 / 1_048_576) / 2) * 100)
    assert s[1] == least_b + balanced_b


def test_default_spreads_small_pods_and_strands_gpus_for_tp8() -> None:
    pods = (*tuple(tp_pod(f"small-{i}", 1, fleet="small") for i in range(8)), tp_pod("big", 8))
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), pending=pods)
    plan = schedule_default(snap)
    assert "big" in plan.unplaced
    assert len(plan.bindings) == 8
    assert {b.node for b in plan.bindings} == {"a", "b"}  # spread: 4 and 4
    assert evaluate(snap, plan).stranded_gpus == 8
    assert violations(snap, plan) == []


def test_default_preemption_evicts_minimal_lowest_priority_victims() -> None:
    bound = (
        tp_pod("low-a", 2, tier=0, node="n"),
        tp_pod("low-b", 2, tier=1, node="n"),
        tp_pod("low-c", 2, tier=1, node="n"),
        tp_pod("low-d", 2, tier=1, node="n"),
    )
    snap = Snapshot(nodes=(gpu_node("n"),), bound=bound, pending=(tp_pod("high", 4, tier=2),))
    plan = schedule_default(snap)
    assert [b.pod for b in plan.bindings] == ["high"]
    victims = sorted(e.pod for e in plan.evictions)
    # two TP2 victims are needed; the tier-0 pod goes first, then one tier-1 pod
    assert len(victims) == 2 and "low-a" in victims
    assert violations(snap, plan) == []


def test_no_preemption_of_equal_or_higher_tiers() -> None:
    snap = Snapshot(
        nodes=(gpu_node("n"),),
        bound=(tp_pod("same", 8, tier=1, node="n"),),
        pending=(tp_pod("new", 8, tier=1),),
    )
    plan = schedule_default(snap)
    assert plan.evictions == () and plan.unplaced == ("new",)


def test_filters_taints_and_selectors() -> None:
    nodes = (
        gpu_node("tainted", taints=(Taint("dedicated", "x", "NoSchedule"),)),
        gpu_node("a100", labels=(("gpu", "A100"),)),
    )
    pods = (
        tp_pod("wants-h100", 1, node_selector=(("gpu", "H100"),)),
        tp_pod("tolerant", 1, tolerations=(Toleration("dedicated", "Equal", "x", "NoSchedule"),)),
        tp_pod("plain", 1),
    )
    plan = schedule_default(Snapshot(nodes=nodes, pending=pods))
    placed = {b.pod: b.node for b in plan.bindings}
    assert "wants-h100" not in placed
    assert placed["plain"] == "a100"
    assert placed["tolerant"] in {"tainted", "a100"}
