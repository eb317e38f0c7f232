"""The scheduler loop against a real API server and KWOK GPU nodes: binds as planned, preempts.

Each test creates its own nodes with a unique label and selects them, so other tests' nodes and pods
(which the solver also sees, as it must) do not change the outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flotilla.localcluster.readiness import wait_until

pytestmark = pytest.mark.e2e

POOL = "flotilla.dev/e2e-pool"
FleetPod = Callable[[str, str, int, int, dict[str, str]], dict[str, Any]]


async def nodes_of(api: Any, namespace: str) -> dict[str, str | None]:
    from kubernetes_asyncio.client import CoreV1Api

    pods = await CoreV1Api(api).list_namespaced_pod(namespace)
    return {p.metadata.name: p.spec.node_name for p in pods.items if not p.metadata.deletion_timestamp}


@pytest.mark.usefixtures("placement")
async def test_mixed_sizes_are_bound_as_planned(
    api: Any, namespace: str, gpu_nodes: Callable[..., Awaitable[list[str]]], fleet_pod: FleetPod
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    pool = uuid.uuid4().hex[:8]
    names = await gpu_nodes(2, labels={POOL: pool})
    core = CoreV1Api(api)
    for i in range(8):
        await core.create_namespaced_pod(namespace, fleet_pod(f"small-{i}", "small", 1, 0, {POOL: pool}))
    await core.create_namespaced_pod(namespace, fleet_pod("big-0", "big", 8, 0, {POOL: pool}))

    async def all_bound() -> bool:
        placed = await nodes_of(api, namespace)
        return len(placed) == 9 and all(placed.values())

    await wait_until(all_bound, timeout_s=30, what="all 9 pods bound")
    placed = await nodes_of(api, namespace)
    assert set(placed.values()) == set(names)
    # the TP=8 replica has a node to itself; kube-scheduler's spreading would have stranded it
    assert sum(1 for node in placed.values() if node == placed["big-0"]) == 1


@pytest.mark.usefixtures("placement")
async def test_higher_tier_preempts_lower_tier(
    api: Any, namespace: str, gpu_nodes: Callable[..., Awaitable[list[str]]], fleet_pod: FleetPod
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    pool = uuid.uuid4().hex[:8]
    (node,) = await gpu_nodes(1, labels={POOL: pool})
    core = CoreV1Api(api)
    await core.create_namespaced_pod(namespace, fleet_pod("batch-0", "batch", 8, 0, {POOL: pool}))

    async def low_bound() -> bool:
        return (await nodes_of(api, namespace)).get("batch-0") == node

    await wait_until(low_bound, timeout_s=30, what="batch-0 bound")
    await core.create_namespaced_pod(namespace, fleet_pod("chat-0", "chat", 8, 1, {POOL: pool}))

    async def high_bound_low_gone() -> bool:
        placed = await nodes_of(api, namespace)
        return placed.get("chat-0") == node and "batch-0" not in placed

    await wait_until(high_bound_low_gone, timeout_s=60, what="chat-0 bound in batch-0's place")
    reasons: set[tuple[str, str]] = set()

    async def explained() -> bool:
        # The Scheduled Event is written just after the binding the wait above saw.
        events = await core.list_namespaced_event(namespace)
        reasons.update((e.involved_object.name, e.reason) for e in events.items)
        return ("chat-0", "Scheduled") in reasons

    await wait_until(explained, timeout_s=15, what="chat-0's Scheduled Event")
    assert ("batch-0", "Preempted") in reasons
