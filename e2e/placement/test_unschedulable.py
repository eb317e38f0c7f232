"""A pod the loop cannot place says why on itself, as kube-scheduler's do: PodScheduled=False, reason
Unschedulable (through pods/status; the operator turns it into the fleet's condition), and the
binding that follows once capacity appears flips it to True (the API server does that)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flotilla.localcluster.readiness import wait_until
from flotilla.placement.kube.telemetry import PlacementMetrics

pytestmark = pytest.mark.e2e

POOL = "flotilla.dev/e2e-pool"
FleetPod = Callable[[str, str, int, int, dict[str, str]], dict[str, Any]]


async def _scheduled(api: Any, namespace: str, name: str) -> Any:
    from kubernetes_asyncio.client import CoreV1Api

    pod = await CoreV1Api(api).read_namespaced_pod(name, namespace)
    return next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None), pod


@pytest.mark.usefixtures("placement")
async def test_unplaceable_pod_is_marked_then_bound_when_capacity_appears(
    api: Any, namespace: str, gpu_nodes: Callable[..., Awaitable[list[str]]], fleet_pod: FleetPod
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    pool = uuid.uuid4().hex[:8]
    await gpu_nodes(1, gpus=4, labels={POOL: pool})
    await CoreV1Api(api).create_namespaced_pod(namespace, fleet_pod("wide-0", "wide", 8, 0, {POOL: pool}))

    async def marked() -> bool:
        cond, _ = await _scheduled(api, namespace, "wide-0")
        return cond is not None and cond.status == "False"

    await wait_until(marked, timeout_s=30, what="wide-0 marked PodScheduled=False")
    cond, pod = await _scheduled(api, namespace, "wide-0")
    assert cond.reason == "Unschedulable" and cond.message
    assert pod.spec.node_name is None
    events = await CoreV1Api(api).list_namespaced_event(namespace)
    assert any(e.involved_object.name == "wide-0" and e.reason == "FailedScheduling" for e in events.items)

    (big,) = await gpu_nodes(1, gpus=8, labels={POOL: pool})

    async def bound() -> bool:
        cond, pod = await _scheduled(api, namespace, "wide-0")
        return pod.spec.node_name == big and cond is not None and cond.status == "True"

    await wait_until(bound, timeout_s=30, what="wide-0 bound to the 8-GPU node")


async def test_fleet_unschedulable_condition_has_one_writer(  # noqa: PLR0917
    operator: Any,
    placement: PlacementMetrics,
    fleets: Any,
    api: Any,
    namespace: str,
    gpu_nodes: Callable[..., Awaitable[list[str]]],
) -> None:
    """Placement marks the pod, the operator reports it on the fleet, and the condition holds still
    (no second writer flipping it back on every reconcile) until the pod is placed."""
    from kubernetes_asyncio.client import CoreV1Api

    pool = uuid.uuid4().hex[:8]
    await gpu_nodes(1, gpus=4, labels={POOL: pool})
    await fleets.create(fleets.manifest("wide", 1, resources={"gpus": 8}, nodeSelector={POOL: pool}))

    async def condition() -> dict[str, Any]:
        status = (await fleets.get("wide")).get("status") or {}
        return {c["type"]: c for c in status.get("conditions") or []}.get("Unschedulable") or {}

    async def reported() -> bool:
        return (await condition()).get("status") == "True"

    await wait_until(reported, timeout_s=60, what="the fleet's Unschedulable=True")
    first = await condition()
    (pod,) = (await CoreV1Api(api).list_namespaced_pod(namespace)).items
    why = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert first["reason"] == "PodsUnschedulable" and first["message"].endswith(why)
    await asyncio.sleep(6)  # three operator resyncs (2 s) and many placement cycles (0.5 s)
    later = await condition()
    # The message may follow the cluster (node counts); the verdict must not flap.
    held = ("status", "reason", "lastTransitionTime")
    assert {k: later[k] for k in held} == {k: first[k] for k in held}, "the condition holds still"

    await gpu_nodes(1, gpus=8, labels={POOL: pool})
    await fleets.wait_ready("wide", 1, timeout_s=120)

    async def cleared() -> bool:
        return (await condition()).get("status") == "False"

    await wait_until(cleared, timeout_s=30, what="the fleet's Unschedulable=False")
