"""Kubernetes JSON becomes the snapshot the solver expects, following the operator's pod contract."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from flotilla.api import labels as api
from flotilla.placement.kube.kubeconv import build_snapshot, parse_quantity, to_node, to_pod
from flotilla.placement.types.snapshot import Resources, SpreadMode


def node_json(name: str, gpus: int = 8, ready: bool = True, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {api.GPU_PRODUCT_LABEL: "H100"}},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": "128", "memory": "2048Gi", "pods": "110", api.GPU_RESOURCE: str(gpus)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod_json(name: str, gpus: int = 1, node: str | None = None, **extra: Any) -> dict[str, Any]:
    labels = {api.LABEL_FLEET: "llama", api.LABEL_TIER: "2", api.LABEL_MANAGED_BY: api.MANAGED_BY}
    labels.update(extra.pop("labels", {}))
    spec: dict[str, Any] = {
        "schedulerName": api.SCHEDULER_NAME,
        "containers": [
            {
                "name": "engine",
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {api.GPU_RESOURCE: gpus},
                },
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": labels,
            "annotations": extra.pop("annotations", {}),
        },
        "spec": spec,
        "status": {"phase": extra.pop("phase", "Running" if node else "Pending")},
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("16Gi", Decimal(16 * 2**30)),
        ("1e3", Decimal(1000)),
        (8, Decimal(8)),
    ],
)
def test_parse_quantity(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_pod_follows_the_operator_contract() -> None:
    pod = to_pod(
        pod_json(
            "llama-0",
            4,
            annotations={
                api.ANNOTATION_GANG: "llama-0",
                api.ANNOTATION_GANG_SIZE: "2",
                api.ANNOTATION_PLACEMENT: "spread",
                api.ANNOTATION_PLACEMENT_MODE: "hard",
                api.ANNOTATION_TOPOLOGY_KEY: "topology.kubernetes.io/zone",
            },
        )
    )
    assert pod.name == "ns/llama-0" and pod.fleet == "ns/llama" and pod.tier == 2 and pod.managed
    assert pod.requests == Resources(4, 500, 1024, 0)
    assert pod.gang == "ns/llama-0" and pod.gang_size == 2
    assert pod.spread is not None and pod.spread.mode is SpreadMode.HARD
    assert pod.spread.topology_key == "topology.kubernetes.io/zone"


def test_node_readiness_and_cordon() -> None:
    assert to_node(node_json("a")).ready
    assert not to_node(node_json("b", ready=False)).ready
    assert not to_node(node_json("c", unschedulable=True)).ready
    assert to_node(node_json("a")).allocatable == Resources(8, 128_000, 2_097_152, 110)


def test_snapshot_sees_other_schedulers_pods_but_only_our_pending_ones() -> None:
    other = pod_json("system", 0, node="a", labels={api.LABEL_MANAGED_BY: "someone"})
    other["spec"]["schedulerName"] = "default-scheduler"
    theirs_pending = pod_json("theirs")
    theirs_pending["spec"]["schedulerName"] = "default-scheduler"
    done = pod_json("done", node="a", phase="Succeeded")
    terminating = pod_json("leaving", node="a")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    snap = build_snapshot(
        [node_json("a")],
        [other, theirs_pending, done, terminating, pod_json("ours"), pod_json("bound", node="a")],
    )
    assert [p.name for p in snap.pending] == ["ns/ours"]
    bound = {p.name: p for p in snap.bound}
    assert set(bound) == {"ns/system", "ns/leaving", "ns/bound"}
    assert not bound["ns/system"].managed  # not flotilla's: never evicted
    assert not bound["ns/leaving"].managed  # already terminating
    assert bound["ns/bound"].managed
