"""`placement.strategy: pack`: a fleet's pods share as few nodes (domains) as the tiers allow.

The bug this guards: the demo's batch-mistral (2 replicas x 2 GPUs, pack) landed on two 8-GPU nodes
every run, because pack never reached the solver and filling an already-used node cost nothing.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from flotilla.api import labels as api
from flotilla.placement.cpsat.solver import solve
from flotilla.placement.examples import gpu_node, hard_pack, soft_pack, soft_spread, tp_pod
from flotilla.placement.heuristics.bestfit import schedule_best_fit
from flotilla.placement.kube.kubeconv import build_snapshot
from flotilla.placement.rules.metrics import evaluate, violations
from flotilla.placement.types.plan import Plan, Status
from flotilla.placement.types.snapshot import Pod, Snapshot, SpreadMode

ZONE = "topology.kubernetes.io/zone"


def nodes_of(plan: Plan, fleet_pods: tuple[Pod, ...]) -> set[str]:
    names = {p.name for p in fleet_pods}
    return {b.node for b in plan.bindings if b.pod in names}


def batch(n: int = 2, gpus: int = 2, tier: int = 10, pack: object = None) -> tuple[Pod, ...]:
    return tuple(
        tp_pod(f"batch-{i}", gpus, tier, fleet="batch", pack=soft_pack() if pack is None else pack)  # type: ignore[arg-type]
        for i in range(n)
    )


@pytest.mark.parametrize("approach", ["classes", "direct"])
def test_two_pending_pods_of_a_pack_fleet_share_one_empty_node(approach: str) -> None:
    pods = batch()
    snap = Snapshot(nodes=(gpu_node("gpu-node-0"), gpu_node("gpu-node-1")), pending=pods)
    plan = solve(snap, 2.0, approach=approach)  # type: ignore[arg-type]
    assert len(plan.bindings) == 2 and len(nodes_of(plan, pods)) == 1
    assert plan.status is Status.OPTIMAL
    assert evaluate(snap, plan).pack_domains == 1


def test_pack_beside_other_bound_pods_uses_one_node() -> None:
    # the demo's shape: chat-llama (tier 100, 1 GPU) already on nodes 0 and 1, both with room left;
    # without pack, filling either used node was free and the replicas scattered over both
    nodes = tuple(gpu_node(f"gpu-node-{i}", labels=((ZONE, f"zone-{i % 2}"),)) for i in range(4))
    llama = (
        tp_pod("llama-0", 1, 100, fleet="llama", node="gpu-node-0", spread=soft_spread(1, ZONE)),
        tp_pod("llama-1", 1, 100, fleet="llama", node="gpu-node-1", spread=soft_spread(1, ZONE)),
        tp_pod("llama-2", 1, 100, fleet="llama", node="gpu-node-1", spread=soft_spread(1, ZONE)),
    )
    pods = batch()
    snap = Snapshot(nodes=nodes, bound=llama, pending=pods)
    plan = solve(snap, 2.0)
    assert len(plan.bindings) == 2 and len(nodes_of(plan, pods)) == 1
    assert plan.evictions == () and plan.moves == ()
    # the same, with the pack fleet's pods and the spread fleet pending in one batch
    pending = (*(replace(p, node=None) for p in llama), *pods)
    snap = Snapshot(nodes=nodes, pending=pending)
    plan = solve(snap, 2.0)
    assert len(plan.bindings) == 5 and len(nodes_of(plan, pods)) == 1
    assert evaluate(snap, plan).soft_spread_excess == 1  # 3 pods over 2 zones: the least possible


@pytest.mark.parametrize("where", ["gpu-node-0", "gpu-node-1", "gpu-node-2"])
def test_a_later_batch_joins_the_node_where_the_fleet_already_runs(where: str) -> None:
    # node 2 is emptier and node 0 fuller than the fleet's node: best fit alone would not pick it
    nodes = tuple(gpu_node(f"gpu-node-{i}") for i in range(4))
    others = (
        tp_pod("x-0", 3, 100, fleet="x", node="gpu-node-0"),
        tp_pod("x-1", 1, 100, fleet="x", node="gpu-node-1"),
    )
    first, second = batch()
    snap = Snapshot(nodes=nodes, bound=(*others, replace(first, node=where)), pending=(second,))
    for plan in (solve(snap, 2.0), schedule_best_fit(snap)):
        assert [(b.pod, b.node) for b in plan.bindings] == [("batch-1", where)], plan.approach
        assert plan.moves == () and plan.evictions == ()


def test_pack_never_costs_a_higher_tier_pod() -> None:
    # the only node with room for the tier-5 TP8 is the one the pack fleet would like to fill
    nodes = (gpu_node("a"), gpu_node("b", gpus=4))
    pending = (*batch(2, 2, tier=1), tp_pod("big", 8, 5))
    snap = Snapshot(nodes=nodes, pending=pending)
    plan = solve(snap, 2.0)
    placed = {b.pod: b.node for b in plan.bindings}
    assert placed["big"] == "a" and placed["batch-0"] == placed["batch-1"] == "b"


def test_spread_still_spreads_beside_pack() -> None:
    nodes = tuple(gpu_node(f"n{i}") for i in range(3))
    spread = tuple(tp_pod(f"s-{i}", 1, fleet="s", spread=soft_spread()) for i in range(3))
    pending = (*spread, *batch(3, 2))
    snap = Snapshot(nodes=nodes, pending=pending)
    plan = solve(snap, 2.0)
    assert len(nodes_of(plan, spread)) == 3
    assert len(nodes_of(plan, pending[3:])) == 1
    assert plan.status is Status.OPTIMAL


def test_zone_pack_keeps_a_fleet_in_one_zone() -> None:
    nodes = tuple(gpu_node(f"n{i}", labels=((ZONE, f"z{i % 2}"),)) for i in range(4))
    pods = batch(4, 4, pack=soft_pack(ZONE))
    snap = Snapshot(nodes=nodes, pending=pods)
    plan = solve(snap, 2.0)
    zones = {dict(n.labels)[ZONE] for n in nodes if n.name in nodes_of(plan, pods)}
    assert len(plan.bindings) == 4 and len(zones) == 1


def test_hard_pack_holds_new_pods_to_the_fleets_node() -> None:
    nodes = (gpu_node("a"), gpu_node("b"))
    first, *rest = batch(4, 4, pack=hard_pack())
    # running on a with room for one more: the third replica must wait rather than open b
    snap = Snapshot(nodes=nodes, bound=(replace(first, node="a"),), pending=tuple(rest))
    for plan in (solve(snap, 2.0), schedule_best_fit(snap)):
        assert [(b.pod, b.node) for b in plan.bindings] == [("batch-1", "a")], plan.approach
        assert violations(snap, plan) == []
    # nothing running yet: all on one node, whichever
    pods = batch(3, 2, pack=hard_pack())
    snap = Snapshot(nodes=nodes, pending=pods)
    plan = solve(snap, 2.0)
    assert len(plan.bindings) == 3 and len(nodes_of(plan, pods)) == 1
    assert violations(snap, plan) == []
    # a plan that opens a second node breaks the rule
    split = replace(
        plan,
        bindings=(
            *plan.bindings[:2],
            replace(plan.bindings[2], node="b" if plan.bindings[0].node == "a" else "a"),
        ),
    )
    assert any("does not fit" in v for v in violations(snap, split))


def test_pack_annotations_reach_the_snapshot() -> None:
    def pod(name: str, placement: str, mode: str, key: str) -> dict[str, object]:
        return {
            "metadata": {
                "name": name,
                "namespace": "default",
                "labels": {api.LABEL_FLEET: "batch", api.LABEL_MANAGED_BY: api.MANAGED_BY},
                "annotations": {
                    api.ANNOTATION_PLACEMENT: placement,
                    api.ANNOTATION_PLACEMENT_MODE: mode,
                    api.ANNOTATION_TOPOLOGY_KEY: key,
                },
            },
            "spec": {"schedulerName": api.SCHEDULER_NAME, "containers": []},
            "status": {"phase": "Pending"},
        }

    snap = build_snapshot(
        [],
        [
            pod("a", "pack", "soft", "kubernetes.io/hostname"),
            pod("b", "pack", "hard", ZONE),
            pod("c", "spread", "soft", ZONE),
        ],
    )
    a, b, c = snap.pending
    assert (
        a.pack is not None
        and a.pack.mode is SpreadMode.SOFT
        and a.pack.topology_key == "kubernetes.io/hostname"
    )
    assert b.pack is not None and b.pack.mode is SpreadMode.HARD and b.pack.topology_key == ZONE
    assert c.pack is None and c.spread is not None
