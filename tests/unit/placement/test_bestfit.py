"""Best-fit packs tightly, keeps gangs whole and never breaks a hard rule."""

from __future__ import annotations

from flotilla.placement.examples import gpu_node, tp_pod
from flotilla.placement.heuristics.bestfit import schedule_best_fit
from flotilla.placement.rules.metrics import violations
from flotilla.placement.types.snapshot import Snapshot


def test_best_fit_keeps_whole_nodes_free_for_tp8() -> None:
    pods = (*tuple(tp_pod(f"small-{i}", 1, fleet="small") for i in range(8)), tp_pod("big", 8))
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), pending=pods)
    plan = schedule_best_fit(snap)
    assert plan.unplaced == ()
    assert violations(snap, plan) == []


def test_incomplete_gang_is_rolled_back() -> None:
    gang = tuple(tp_pod(f"g-{i}", 8, tier=1, fleet="g", gang="g", gang_size=3) for i in range(3))
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), pending=(*gang, tp_pod("x", 4)))
    plan = schedule_best_fit(snap)
    assert {b.pod for b in plan.bindings} == {"x"}
    assert violations(snap, plan) == []


def test_preempts_lower_tier_but_not_gang_members() -> None:
    bound = (
        tp_pod("gang-0", 4, tier=0, fleet="gf", node="a", gang="gf", gang_size=2),
        tp_pod("gang-1", 4, tier=0, fleet="gf", node="a", gang="gf", gang_size=2),
        tp_pod("lone", 8, tier=0, node="b"),
    )
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), bound=bound, pending=(tp_pod("vip", 8, tier=2),))
    plan = schedule_best_fit(snap)
    assert [(b.pod, b.node) for b in plan.bindings] == [("vip", "b")]
    assert [e.pod for e in plan.evictions] == ["lone"]
