"""The scheduler loop against a real API server and KWOK GPU nodes: binds as planned, preempts.

Each test creates its own nodes with a unique label and selects them, so other tests' nodes and pods
(which the solver also sees, as it must) do not change the outcome.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from flotilla.api import labels as api
from flotilla.localcluster.nodes import KWOK_TOLERATION
from flotilla.placement.clusterapi import KubeClusterApi
from flotilla.placement.loop import LoopConfig, PlacementLoop

pytestmark = pytest.mark.e2e

POOL = "flotilla.dev/e2e-pool"


def fleet_pod(name: str, fleet: str, gpus: int, tier: int, pool: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                api.LABEL_FLEET: fleet,
                api.LABEL_TIER: str(tier),
                api.LABEL_MANAGED_BY: api.MANAGED_BY,
            },
        },
        "spec": {
            "schedulerName": api.SCHEDULER_NAME,
            "nodeSelector": {POOL: pool},
            "tolerations": [KWOK_TOLERATION],
            "containers": [
                {
                    "name": "engine",
                    "image": "engine",
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi", api.GPU_RESOURCE: str(gpus)},
                        "limits": {api.GPU_RESOURCE: str(gpus)},
                    },
                }
            ],
        },
    }


@pytest.fixture
async def running_loop(api: Any) -> AsyncIterator[PlacementLoop]:
    loop = PlacementLoop(KubeClusterApi(api), LoopConfig(budget_s=1.0, batch_window_s=0.2, resync_s=0.5))
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    yield loop
    stop.set()
    await asyncio.wait_for(task, 10)


async def nodes_of(api: Any, namespace: str) -> dict[str, str | None]:
    from kubernetes_asyncio.client import CoreV1Api

    pods = await CoreV1Api(api).list_namespaced_pod(namespace)
    return {p.metadata.name: p.spec.node_name for p in pods.items if not p.metadata.deletion_timestamp}


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


async def test_mixed_sizes_are_bound_as_planned(
    api: Any, namespace: str, gpu_nodes: Callable[..., Awaitable[list[str]]], running_loop: PlacementLoop
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    pool = uuid.uuid4().hex[:8]
    names = await gpu_nodes(2, labels={POOL: pool})
    core = CoreV1Api(api)
    for i in range(8):
        await core.create_namespaced_pod(namespace, fleet_pod(f"small-{i}", "small", 1, 0, pool))
    await core.create_namespaced_pod(namespace, fleet_pod("big-0", "big", 8, 0, pool))

    async def all_bound() -> bool:
        placed = await nodes_of(api, namespace)
        return len(placed) == 9 and all(placed.values())

    await eventually(all_bound)
    placed = await nodes_of(api, namespace)
    assert set(placed.values()) == set(names)
    # the TP=8 replica has a node to itself; kube-scheduler's spreading would have stranded it
    assert sum(1 for node in placed.values() if node == placed["big-0"]) == 1


async def test_higher_tier_preempts_lower_tier(
    api: Any, namespace: str, gpu_nodes: Callable[..., Awaitable[list[str]]], running_loop: PlacementLoop
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    pool = uuid.uuid4().hex[:8]
    (node,) = await gpu_nodes(1, labels={POOL: pool})
    core = CoreV1Api(api)
    await core.create_namespaced_pod(namespace, fleet_pod("batch-0", "batch", 8, 0, pool))

    async def low_bound() -> bool:
        return (await nodes_of(api, namespace)).get("batch-0") == node

    await eventually(low_bound)
    await core.create_namespaced_pod(namespace, fleet_pod("chat-0", "chat", 8, 1, pool))

    async def high_bound_low_gone() -> bool:
        placed = await nodes_of(api, namespace)
        return placed.get("chat-0") == node and "batch-0" not in placed

    await eventually(high_bound_low_gone, timeout_s=60)
    events = await core.list_namespaced_event(namespace)
    reasons = {(e.involved_object.name, e.reason) for e in events.items}
    assert ("batch-0", "Preempted") in reasons
    assert ("chat-0", "Scheduled") in reasons
