"""The scheduler loop applies plans safely against a fake cluster: bind, evict, wait, explain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from flotilla.api import labels as api
from flotilla.placement.loop import LoopConfig, PlacementLoop


def node_json(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "128", "memory": "2048Gi", "pods": "110", api.GPU_RESOURCE: "8"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod_json(name: str, gpus: int, tier: int, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": api.SCHEDULER_NAME,
        "containers": [{"name": "engine", "resources": {"limits": {api.GPU_RESOURCE: str(gpus)}}}],
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {
                api.LABEL_FLEET: name.split("-", 1)[0],
                api.LABEL_TIER: str(tier),
                api.LABEL_MANAGED_BY: "flotilla",
            },
        },
        "spec": spec,
        "status": {"phase": "Running" if node else "Pending"},
    }


class FakeCluster:
    """Binding sets nodeName; eviction deletes the pod (as if it terminated at once)."""

    def __init__(self, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.nodes = nodes
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.events: list[tuple[str, str, str]] = []
        self.marked: list[tuple[str, str]] = []
        self.evicted: list[str] = []

    async def list_nodes(self) -> list[dict[str, Any]]:
        return self.nodes

    async def list_pods(self) -> list[dict[str, Any]]:
        return list(self.pods.values())

    async def bind(self, pod: str, node: str) -> None:
        p = self.pods[pod.split("/")[1]]
        assert not p["spec"].get("nodeName")
        p["spec"]["nodeName"] = node
        p["status"]["phase"] = "Running"

    async def evict(self, pod: str) -> None:
        self.evicted.append(pod)
        del self.pods[pod.split("/")[1]]

    async def record_event(self, pod: str, reason: str, message: str, warning: bool) -> None:
        self.events.append((pod, reason, message))

    async def mark_unschedulable(self, pod: str, message: str) -> None:
        self.marked.append((pod, message))
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        self.pods[pod.split("/")[1]]["status"]["conditions"] = [cond]

    async def changes(self) -> AsyncIterator[None]:
        while True:
            await asyncio.sleep(3600)
            yield None


CONFIG = LoopConfig(budget_s=0.5, workers=1, batch_window_s=0.0, resync_s=0.05)


async def test_binds_mixed_sizes_so_the_tp8_fits() -> None:
    pods = [pod_json(f"small-{i}", 1, 0) for i in range(8)] + [pod_json("big-0", 8, 0)]
    cluster = FakeCluster([node_json("a"), node_json("b")], pods)
    plan = await PlacementLoop(cluster, CONFIG).cycle()
    assert plan is not None and plan.unplaced == ()
    nodes = {name: p["spec"]["nodeName"] for name, p in cluster.pods.items()}
    assert len(set(nodes.values())) == 2
    assert all(nodes[f"small-{i}"] != nodes["big-0"] for i in range(8))
    assert sum(1 for e in cluster.events if e[1] == "Scheduled") == 9
    assert await PlacementLoop(cluster, CONFIG).cycle() is None  # nothing pending any more


async def test_higher_tier_preempts_then_binds_on_the_next_cycle() -> None:
    cluster = FakeCluster([node_json("a")], [pod_json("low-0", 8, 0, node="a"), pod_json("high-0", 8, 1)])
    loop = PlacementLoop(cluster, CONFIG)
    first = await loop.cycle()
    assert first is not None and [e.pod for e in first.evictions] == ["ns/low-0"]
    assert cluster.pods["high-0"]["spec"].get("nodeName") is None  # waits for the victim to go
    assert any(e[1] == "WaitingForPreemption" for e in cluster.events)
    await loop.cycle()
    assert cluster.pods["high-0"]["spec"]["nodeName"] == "a"


async def test_unplaceable_pod_gets_an_event_and_a_pod_scheduled_condition() -> None:
    cluster = FakeCluster([node_json("a")], [pod_json("same-0", 8, 1, node="a"), pod_json("huge-0", 8, 1)])
    loop = PlacementLoop(cluster, CONFIG)
    plan = await loop.cycle()
    assert plan is not None and plan.unplaced == ("ns/huge-0",)
    failed = [e for e in cluster.events if e[1] == "FailedScheduling"]
    assert failed and "1/1 nodes match" in failed[0][2]
    # Like kube-scheduler: the pod says why (the operator turns it into the fleet's condition).
    assert cluster.marked == [("ns/huge-0", failed[0][2])]
    await loop.cycle()
    assert len(cluster.marked) == 1, "an unchanged reason is not written again"


async def test_run_loop_places_and_stops() -> None:
    cluster = FakeCluster([node_json("a")], [pod_json("x-0", 4, 0)])
    stop = asyncio.Event()
    task = asyncio.create_task(PlacementLoop(cluster, CONFIG).run(stop))
    for _ in range(100):
        if cluster.pods["x-0"]["spec"].get("nodeName"):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert cluster.pods["x-0"]["spec"]["nodeName"] == "a"
