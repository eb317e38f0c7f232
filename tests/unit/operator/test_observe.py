"""Reading pods and nodes into planner facts."""

from __future__ import annotations

from flotilla.operator.observe import observe_node, observe_pod


def test_fleet_pod_facts() -> None:
    pod = {
        "metadata": {
            "name": "f-1-abc",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"flotilla.dev/replica": "1", "flotilla.dev/revision": "r1", "flotilla.dev/tier": "3"},
            "annotations": {"flotilla.dev/failures": "2"},
        },
        "spec": {"nodeName": "n1"},
        "status": {
            "phase": "Failed",
            "podIP": "127.128.0.4",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"state": {"terminated": {"finishedAt": "2026-01-01T00:01:00Z"}}}],
        },
    }
    p = observe_pod(pod)
    assert p is not None
    assert (p.index, p.revision, p.node, p.ip, p.failures, p.tier) == (1, "r1", "n1", "127.128.0.4", 2, "3")
    assert p.terminal and not p.ready
    assert p.finished_at is not None and p.finished_at - p.created == 60


def test_unschedulable_and_crash_looping() -> None:
    pod = {
        "metadata": {"name": "x", "labels": {"flotilla.dev/replica": "0"}},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no GPUs"}
            ],
            "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
        },
    }
    p = observe_pod(pod)
    assert p is not None and p.unschedulable == "no GPUs" and p.failing_reason == "CrashLoopBackOff"
    assert p.finished_at is None


def test_pods_without_a_replica_label_are_not_fleet_pods() -> None:
    assert observe_pod({"metadata": {"name": "x", "labels": {}}}) is None


def test_node_readiness() -> None:
    ready = observe_node(
        {"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    )
    assert ready.ready and ready.not_ready_since is None
    sick = observe_node(
        {
            "metadata": {"name": "n"},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "Unknown", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                ]
            },
        }
    )
    assert not sick.ready and sick.not_ready_since is not None
