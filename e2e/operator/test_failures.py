"""Failures on a real control plane: lost nodes and failed pods get their replicas replaced."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla.api import labels
from flotilla.localcluster.kubectl import Kubectl
from flotilla.localcluster.nodes import NODE_NOT_READY_LABEL, POD_FAIL_LABEL
from flotilla.localcluster.readiness import wait_until

pytestmark = pytest.mark.e2e


async def test_deleted_node_pods_are_recreated_elsewhere(
    operator: Any, binder: Any, fleets: Any, kubectl: Kubectl
) -> None:
    await fleets.create(fleets.manifest("mover", 3))
    pods = await fleets.wait_ready("mover", 3)
    victim_node = pods[0].spec.node_name
    lost = {p.metadata.name for p in pods if p.spec.node_name == victim_node}
    binder.nodes.remove(victim_node)
    kubectl("delete", "node", victim_node, "--wait=false")
    after = await fleets.wait_ready("mover", 3, timeout_s=60)
    assert not lost & {p.metadata.name for p in after}
    assert victim_node not in {p.spec.node_name for p in after}
    assert sorted(int(p.metadata.labels[labels.LABEL_REPLICA]) for p in after) == [0, 1, 2]


async def test_not_ready_node_pods_move_after_grace(
    operator: Any, binder: Any, fleets: Any, kubectl: Kubectl
) -> None:
    await fleets.create(fleets.manifest("evacuee", 3))
    pods = await fleets.wait_ready("evacuee", 3)
    sick = pods[0].spec.node_name
    binder.nodes.remove(sick)
    kubectl("label", "node", sick, f"{NODE_NOT_READY_LABEL}=true")
    try:

        async def moved() -> bool:
            current = await fleets.pods("evacuee")
            return len(current) == 3 and all(p.spec.node_name not in (None, sick) for p in current)

        await wait_until(moved, timeout_s=60, what="pods off the NotReady node")
        await fleets.wait_ready("evacuee", 3)
    finally:
        kubectl("label", "node", sick, f"{NODE_NOT_READY_LABEL}-")


async def test_failed_pod_is_replaced_with_backoff(
    operator: Any, binder: Any, fleets: Any, kubectl: Kubectl, namespace: str
) -> None:
    await fleets.create(fleets.manifest("crashy", 2))
    pods = await fleets.wait_ready("crashy", 2)
    victim = pods[0]
    index = victim.metadata.labels[labels.LABEL_REPLICA]
    kubectl.in_namespace(namespace)("label", "pod", victim.metadata.name, f"{POD_FAIL_LABEL}=true")

    async def degraded() -> bool:
        conds = {c["type"]: c for c in (await fleets.get("crashy")).get("status", {}).get("conditions", [])}
        return (
            conds.get("Degraded", {}).get("status") == "True"
            or conds.get("Ready", {}).get("status") == "False"
        )

    await wait_until(degraded, timeout_s=30, what="the failure noticed in status")
    after = await fleets.wait_ready("crashy", 2, timeout_s=60)
    replacement = next(p for p in after if p.metadata.labels[labels.LABEL_REPLICA] == index)
    assert replacement.metadata.name != victim.metadata.name
    assert replacement.metadata.annotations.get("flotilla.dev/failures") == "1"
