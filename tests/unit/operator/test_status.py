"""Status and conditions: computed from observations, stable when nothing changes."""

from __future__ import annotations

from typing import Any

from flotilla.operator.observe import ObservedPod
from flotilla.operator.plan import Create, Delete, Plan
from flotilla.operator.status import compute_status


def pod(index: int, rev: str = "r1", ready: bool = True, **kw: Any) -> ObservedPod:
    return ObservedPod(name=f"f-{index}-{rev}", index=index, revision=rev, ready=ready, phase="Running", **kw)


def status(
    pods: list[ObservedPod], plan: Plan | None = None, previous: Any = None, now: float = 100.0
) -> Any:
    return compute_status(
        fleet_name="f",
        generation=3,
        replicas=3,
        revision="r1",
        min_available=3,
        pods=pods,
        plan=plan or Plan(),
        previous=previous,
        now=now,
    )


def conds(s: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in s.conditions}


def test_all_ready_is_ready_and_complete() -> None:
    s = status([pod(0, ip="127.128.0.5", node="n1"), pod(1), pod(2)])
    assert conds(s) == {
        "Ready": ("True", "AllReplicasReady"),
        "Progressing": ("False", "Complete"),
        "Degraded": ("False", "AsExpected"),
        "Unschedulable": ("False", "AllScheduled"),
        "RoutingAccepted": ("True", "Accepted"),
    }
    assert (s.replicas, s.ready_replicas, s.updated_replicas) == (3, 3, 3)
    assert s.selector == "flotilla.dev/fleet=f"
    assert s.observed_generation == 3
    assert s.instances[0].address == "127.128.0.5:8000"
    assert s.instances[0].node == "n1"


def test_rollout_in_progress() -> None:
    s = status([pod(0, rev="r0"), pod(1, rev="r0"), pod(2), pod(0, ready=False)], Plan(creates=[Create(1)]))
    assert conds(s)["Progressing"] == ("True", "RollingUpdate")
    assert conds(s)["Ready"][0] == "False"
    assert s.updated_replicas == 2


def test_unschedulable_and_failing_pods_show() -> None:
    s = status(
        [
            pod(0),
            pod(1, ready=False, unschedulable="0/4 nodes have free GPUs"),
            pod(2, ready=False, failing_reason="CrashLoopBackOff"),
        ]
    )
    c = conds(s)
    assert c["Unschedulable"] == ("True", "PodsUnschedulable")
    assert c["Degraded"] == ("True", "PodsFailing")
    assert "0/4 nodes" in next(x.message for x in s.conditions if x.type == "Unschedulable")


def test_node_loss_is_degraded() -> None:
    s = status([pod(0), pod(1), pod(2)], Plan(deletes=[Delete("f-2-r1", 2, "NodeGone", force=True)]))
    assert conds(s)["Degraded"] == ("True", "NodeLost")


def test_transition_times_are_kept_while_status_holds() -> None:
    first = status([pod(0), pod(1), pod(2)], now=100.0)
    again = status([pod(0), pod(1), pod(2)], previous=first, now=500.0)
    assert again == first, "an unchanged fleet yields an identical status (no write)"
    flipped = status([pod(0), pod(1)], previous=first, now=600.0)
    ready = next(c for c in flipped.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.last_transition_time == "1970-01-01T00:10:00Z"


def test_blocked_fleet_says_why() -> None:
    s = compute_status(
        fleet_name="f",
        generation=1,
        replicas=1,
        revision="r1",
        min_available=1,
        pods=[],
        plan=Plan(),
        previous=None,
        now=0,
        blocked="PriorityClass gold not found",
    )
    assert conds(s)["Progressing"] == ("False", "Blocked")
    assert "gold" in next(c.message for c in s.conditions if c.type == "Degraded")
