"""The planner: scaling, rolling updates within bounds, replacement and backoff, lost nodes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.api.spec import RolloutSpec
from flotilla.operator.config import BackoffConfig
from flotilla.operator.observe import NodeState, ObservedPod
from flotilla.operator.plan import FleetSnapshot, Plan, plan, removal_order, resolve_bound, rollout_bounds

BACKOFF = BackoffConfig(base_s=10, max_s=80)
GRACE = 30.0
NOW = 1000.0


def pod(index: int, rev: str = "new", ready: bool = True, **kw: Any) -> ObservedPod:
    fields: dict[str, Any] = {"phase": "Running" if ready else "Pending", "node": "n1", "created": 1.0}
    fields.update(kw)
    return ObservedPod(
        name=f"p{index}-{rev}-{kw.get('suffix', '')}",
        index=index,
        revision=rev,
        ready=ready,
        **{k: v for k, v in fields.items() if k != "suffix"},
    )


def snap(
    pods: list[ObservedPod], replicas: int = 3, surge: int | str = 1, unavailable: int | str = 0, **kw: Any
) -> FleetSnapshot:
    args: dict[str, Any] = {"nodes": {"n1": NodeState("n1", True), "n2": NodeState("n2", True)}}
    args.update(kw)
    return FleetSnapshot(
        replicas=replicas,
        revision="new",
        rollout=RolloutSpec(max_surge=surge, max_unavailable=unavailable),
        pods=tuple(pods),
        now=NOW,
        **args,
    )


def run(s: FleetSnapshot) -> Plan:
    return plan(s, BACKOFF, GRACE)


def test_empty_fleet_creates_all_replicas() -> None:
    out = run(snap([], replicas=4))
    assert [c.index for c in out.creates] == [0, 1, 2, 3]
    assert not out.deletes


def test_steady_state_is_a_no_op() -> None:
    out = run(snap([pod(0), pod(1), pod(2)]))
    assert out.empty and out.requeue_after is None


def test_scale_down_removes_highest_index_first() -> None:
    out = run(snap([pod(i) for i in range(5)], replicas=3))
    assert sorted(d.name for d in out.deletes) == sorted([pod(3).name, pod(4).name])
    assert {d.reason for d in out.deletes} == {"ScaleDown"}


def test_scale_down_prefers_unready() -> None:
    pods = [pod(0), pod(1, ready=False), pod(2), pod(3)]
    out = run(snap(pods, replicas=2))
    assert {d.index for d in out.deletes} == {1, 3}
    assert [p.index for p in removal_order(pods)] == [1, 3, 2, 0]


def test_scale_up_fills_lowest_free_indices() -> None:
    out = run(snap([pod(0), pod(2)], replicas=4))
    assert [c.index for c in out.creates] == [1, 3]


def test_rollout_surges_then_deletes_replaced_old_pods() -> None:
    old = [pod(i, rev="old") for i in range(3)]
    first = run(snap(old))
    assert len(first.creates) == 1 and not first.deletes, "maxSurge=1, maxUnavailable=0"
    index = first.creates[0].index
    assert index in {0, 1, 2}, "the new pod takes an old pod's slot"
    second = run(snap([*old, pod(index, rev="new", ready=False)]))
    assert second.empty, "the new pod is not ready yet: nothing may go"
    third = run(snap([*old, pod(index, rev="new")]))
    assert [d.index for d in third.deletes] == [index], "the replaced old pod goes first"
    assert len(third.creates) == 1


def test_rollout_with_max_unavailable_deletes_first() -> None:
    old = [pod(i, rev="old") for i in range(4)]
    out = run(snap(old, replicas=4, surge=0, unavailable="50%"))
    assert len(out.deletes) == 2 and len(out.creates) == 2
    assert {d.index for d in out.deletes} == {c.index for c in out.creates}


def test_bounds_resolve_like_a_deployment() -> None:
    assert resolve_bound("25%", 10, round_up=True) == 3
    assert resolve_bound("25%", 10, round_up=False) == 2
    assert rollout_bounds(RolloutSpec(max_surge="10%", max_unavailable="10%"), 5) == (1, 0)
    assert rollout_bounds(RolloutSpec(max_surge=0, max_unavailable="10%"), 5) == (0, 1), "never both zero"


def test_failed_pod_waits_for_backoff_then_is_replaced_in_its_slot() -> None:
    failed = pod(1, ready=False, phase="Failed", finished_at=NOW - 4, failures=1)
    waiting = run(snap([pod(0), failed, pod(2)]))
    assert waiting.empty
    assert waiting.requeue_after == 16, "second failure waits base*2 = 20 s from the finish"
    later = run(replace(snap([pod(0), failed, pod(2)]), now=NOW + 20))
    assert [(d.name, d.reason) for d in later.deletes] == [(failed.name, "PodFailed")]
    assert [(c.index, c.failures, c.reason) for c in later.creates] == [(1, 2, "Replace")]


def test_deleted_pod_is_replaced_at_once() -> None:
    out = run(snap([pod(0), pod(2)]))
    assert [(c.index, c.failures) for c in out.creates] == [(1, 0)]


def test_pods_being_deleted_are_ignored() -> None:
    out = run(snap([pod(0), pod(1, deleting=True), pod(2)]))
    assert [c.index for c in out.creates] == [1]


def test_pod_on_gone_node_is_force_deleted_and_replaced() -> None:
    out = run(snap([pod(0), pod(1, node="gone"), pod(2)]))
    (delete,) = out.deletes
    assert delete.reason == "NodeGone" and delete.force
    assert [c.index for c in out.creates] == [1]


def test_pod_being_deleted_on_a_gone_node_is_forced() -> None:
    # A graceful deletion that began before the node vanished (scale-down, rollout, a NotReady
    # node's grace) waits for a kubelet that is gone: only the pod GC, 40 s and more later, would end
    # it. The slot was refilled when the deletion began, so nothing is created for it again.
    out = run(snap([pod(0), pod(1, node="gone", deleting=True), pod(1, suffix="new"), pod(2)]))
    assert [(d.name, d.reason, d.force) for d in out.deletes] == [("p1-new-", "NodeGone", True)]
    assert out.creates == []
    # On a node that still exists, a pod being deleted is left to finish its graceful stop.
    assert run(snap([pod(0), pod(1, deleting=True), pod(2)])).deletes == []


def test_not_ready_node_has_a_grace_period() -> None:
    nodes = {"n1": NodeState("n1", True), "n2": NodeState("n2", False, not_ready_since=NOW - 10)}
    pods = [pod(0), pod(1, node="n2"), pod(2)]
    early = run(snap(pods, nodes=nodes))
    assert early.empty and early.requeue_after == 20
    late = run(replace(snap(pods, nodes=nodes), now=NOW + 21))
    assert [(d.index, d.reason, d.force) for d in late.deletes] == [(1, "NodeNotReady", False)]
    assert [c.index for c in late.creates] == [1]


def test_unknown_nodes_judge_nothing_lost() -> None:
    out = run(snap([pod(0, node="x"), pod(1, node="y"), pod(2, node="z")], nodes=None))
    assert out.empty


def test_duplicates_of_one_index_are_removed() -> None:
    keep = pod(0, created=1.0)
    extra = pod(0, created=2.0, suffix="b")
    out = run(snap([keep, extra, pod(1), pod(2)]))
    assert [(d.name, d.reason) for d in out.deletes] == [(extra.name, "Duplicate")]


def test_mutable_metadata_is_patched_in_place() -> None:
    pods = [pod(i, extra_labels=(("flotilla.dev/tier", "1"),)) for i in range(3)]
    out = run(snap(pods, labels={"flotilla.dev/tier": "5"}))
    assert not out.creates and not out.deletes
    assert [p.labels for p in out.patches] == [{"flotilla.dev/tier": "5"}] * 3


def _simulate(replicas: int, start: int, surge: int, unavailable: int) -> list[tuple[int, int]]:
    """Roll `start` old pods to `replicas` new ones; new pods become ready one step after creation."""
    pods = [pod(i, rev="old") for i in range(start)]
    seen = []
    for step in range(200):
        s = snap(pods, replicas=replicas, surge=surge, unavailable=unavailable)
        out = run(s)
        gone = {d.name for d in out.deletes}
        pods = [replace(p, ready=True) if p.revision == "new" else p for p in pods if p.name not in gone]
        pods += [pod(c.index, rev="new", ready=False, suffix=str(step)) for c in out.creates]
        seen.append((sum(p.ready for p in pods), len(pods)))
        if out.empty and all(p.revision == "new" and p.ready for p in pods) and len(pods) == replicas:
            return seen
    raise AssertionError(f"no convergence: {pods}")


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(1, 12),
    surge=st.integers(0, 3),
    unavailable=st.integers(0, 3),
)
def test_rolling_update_respects_bounds_and_converges(replicas: int, surge: int, unavailable: int) -> None:
    surge_n, unavailable_n = rollout_bounds(
        RolloutSpec(max_surge=surge, max_unavailable=unavailable), replicas
    )
    for ready, total in _simulate(replicas, replicas, surge, unavailable):
        assert total <= replicas + surge_n
        assert ready >= replicas - unavailable_n


@settings(max_examples=30, deadline=None)
@given(replicas=st.integers(0, 8), start=st.integers(0, 8))
def test_rollout_while_scaling_converges(replicas: int, start: int) -> None:
    _simulate(replicas, start, 1, 0)
