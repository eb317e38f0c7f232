"""The scheduler loop applies plans safely against a fake cluster: bind, evict, wait, explain."""

from __future__ import annotations

import asyncio

from flotilla.placement.kube.fakecluster import FakeClusterApi, node_json, pod_json
from flotilla.placement.kube.loop import LoopConfig, PlacementLoop

CONFIG = LoopConfig(budget_s=0.5, workers=1, batch_window_s=0.0, resync_s=0.05)


async def test_binds_mixed_sizes_so_the_tp8_fits() -> None:
    pods = [pod_json(f"small-{i}", 1, 0) for i in range(8)] + [pod_json("big-0", 8, 0)]
    cluster = FakeClusterApi([node_json("a"), node_json("b")], pods)
    plan = await PlacementLoop(cluster, CONFIG).cycle()
    assert plan is not None and plan.unplaced == ()
    nodes = {name: p["spec"]["nodeName"] for name, p in cluster.pods.items()}
    assert len(set(nodes.values())) == 2
    assert all(nodes[f"small-{i}"] != nodes["big-0"] for i in range(8))
    assert sum(1 for e in cluster.events if e[1] == "Scheduled") == 9
    assert await PlacementLoop(cluster, CONFIG).cycle() is None  # nothing pending any more


async def test_higher_tier_preempts_then_binds_on_the_next_cycle() -> None:
    cluster = FakeClusterApi([node_json("a")], [pod_json("low-0", 8, 0, node="a"), pod_json("high-0", 8, 1)])
    loop = PlacementLoop(cluster, CONFIG)
    first = await loop.cycle()
    assert first is not None and [e.pod for e in first.evictions] == ["ns/low-0"]
    assert cluster.pods["high-0"]["spec"].get("nodeName") is None  # waits for the victim to go
    assert any(e[1] == "WaitingForPreemption" for e in cluster.events)
    await loop.cycle()
    assert cluster.pods["high-0"]["spec"]["nodeName"] == "a"


async def test_unplaceable_pod_gets_an_event_and_a_pod_scheduled_condition() -> None:
    cluster = FakeClusterApi([node_json("a")], [pod_json("same-0", 8, 1, node="a"), pod_json("huge-0", 8, 1)])
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
    cluster = FakeClusterApi([node_json("a")], [pod_json("x-0", 4, 0)])
    stop = asyncio.Event()
    task = asyncio.create_task(PlacementLoop(cluster, CONFIG).run(stop))
    for _ in range(100):
        if cluster.pods["x-0"]["spec"].get("nodeName"):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert cluster.pods["x-0"]["spec"]["nodeName"] == "a"
