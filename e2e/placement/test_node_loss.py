"""Deleting a node re-places its pods: operator and placement loop together on the real control plane.

The operator replaces a replica whose node is gone (it does not wait for the pod garbage collector,
which removes pods of deleted nodes only after ~40 s); the placement loop binds the replacement to a
node that still exists. The fleet spreads hard over three nodes of the test's own, so the replacement
has exactly one right place: the node that runs no replica yet.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flotilla.api import labels
from flotilla.localcluster.readiness import wait_until
from flotilla.placement.kube.clusterapi import COMPONENT
from flotilla.placement.kube.telemetry import PlacementMetrics

pytestmark = pytest.mark.e2e

POOL = "flotilla.dev/e2e-pool"


async def test_deleting_a_node_replaces_its_pod_on_another_node(
    operator: Any,
    placement: PlacementMetrics,
    fleets: Any,
    gpu_nodes: Callable[..., Awaitable[list[str]]],
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    core = CoreV1Api(fleets.api)

    pool = uuid.uuid4().hex[:8]
    nodes = await gpu_nodes(3, labels={POOL: pool})
    spec = {
        "resources": {"gpus": 2},
        "nodeSelector": {POOL: pool},
        "placement": {"strategy": "spread", "mode": "hard"},
    }
    await fleets.create(fleets.manifest("survivor", 2, **spec))
    # generous timeouts: the operator, the solver and the control plane share two loaded cores
    pods = await fleets.wait_ready("survivor", 2, timeout_s=120)
    placed = {p.metadata.name: p.spec.node_name for p in pods}
    assert len(set(placed.values())) == 2 and set(placed.values()) <= set(nodes)
    victim = pods[0]
    lost_node, kept_node = victim.spec.node_name, pods[1].spec.node_name
    (free_node,) = set(nodes) - {lost_node, kept_node}
    index = victim.metadata.labels[labels.LABEL_REPLICA]

    await core.delete_node(lost_node)

    async def lost_pod_gone() -> bool:
        names = {p.metadata.name for p in await fleets.pods("survivor", include_deleting=True)}
        return victim.metadata.name not in names

    await wait_until(lost_pod_gone, timeout_s=120, what="the deleted node's pod removed")
    after = await fleets.wait_ready("survivor", 2, timeout_s=120)
    by_replica = {p.metadata.labels[labels.LABEL_REPLICA]: p for p in after}
    replacement = by_replica[index]
    assert replacement.metadata.name != victim.metadata.name
    # hard spread: the one node without a replica, not the survivor's node, not the deleted one
    assert replacement.spec.node_name == free_node
    assert {p.spec.node_name for p in after} == {kept_node, free_node}
    # bound by flotilla's placement loop, which says so in an Event
    events = await core.list_namespaced_event(fleets.namespace)
    scheduled = [
        e
        for e in events.items
        if e.involved_object.name == replacement.metadata.name
        and e.reason == "Scheduled"
        and e.source is not None
        and e.source.component == COMPONENT
    ]
    assert scheduled and free_node in scheduled[0].message
    assert (placement.registry.get_sample_value("flotilla_placement_bindings_total") or 0) >= 3
