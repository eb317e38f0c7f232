"""Fake GPU nodes for KWOK: the manifests (pure) and their pod address ranges.

A node carries what NVIDIA's device plugin and GPU feature discovery would report
(`nvidia.com/gpu` capacity, `nvidia.com/gpu.product`), a zone, and KWOK's marks: the annotation
that tells our KWOK to play this node's kubelet, and the taint that keeps ordinary workloads off
fake nodes unless they tolerate it (as KWOK's documentation does).

Each node gets its own pod CIDR inside 127.128.0.0/9. KWOK hands out pod IPs from the node's
spec.podCIDR, and every 127.x.y.z address is local on Linux, so an engine process can bind the
exact pod IP and port that Kubernetes reports: the data path needs no network set-up at all.
Because those addresses are shared by every process on the machine, each cluster numbers its nodes
from its own block of node subnets (`CLUSTER_BLOCK` of them), so engines of two clusters running at
once (parallel test sessions, a demo beside the tests) never bind the same pod IP.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from flotilla.api.labels import GPU_PRODUCT_LABEL, GPU_RESOURCE, KWOK_TAINT_KEY, KWOK_TAINT_VALUE

KWOK_NODE_ANNOTATION = KWOK_TAINT_KEY  # "kwok.x-k8s.io/node": "fake" marks nodes KWOK manages
KWOK_MANAGE_SELECTOR = f"{KWOK_NODE_ANNOTATION}={KWOK_TAINT_VALUE}"
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# Chaos switch of the committed KWOK stages: a node with this label turns NotReady until removed.
NODE_NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
# Chaos switch for pods: a Running pod with this label fails (phase Failed, exit code 1).
POD_FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"

POD_NETWORK = ipaddress.IPv4Network("127.128.0.0/9")
NODE_PREFIX = 24
NODE_SUBNETS = 2 ** (NODE_PREFIX - POD_NETWORK.prefixlen)
# Node subnets reserved for one cluster's first nodes; a cluster with more nodes runs on into the
# next block, which only matters if another cluster picked that block and both run engines there.
CLUSTER_BLOCK = 256
H100 = "NVIDIA-H100-80GB-HBM3"


def node_pod_cidr(index: int) -> str:
    """The /24 of node number `index` inside POD_NETWORK (0 -> 127.128.0.0/24, 1 -> 127.128.1.0/24)."""
    if not 0 <= index < NODE_SUBNETS:
        raise ValueError(f"node index {index} outside 0..{NODE_SUBNETS - 1}")
    network = int(POD_NETWORK.network_address) + (index << (32 - NODE_PREFIX))
    return f"{ipaddress.IPv4Address(network)}/{NODE_PREFIX}"


@dataclass(frozen=True)
class GpuNodeSpec:
    """What one fake GPU node offers. Quantities use Kubernetes notation ("64", "512Gi")."""

    name: str
    gpus: int = 8
    gpu_product: str = H100
    zone: str = "zone-a"
    cpu: str = "128"
    memory: str = "2048Gi"
    pods: str = "110"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taint: bool = True


def gpu_node_manifest(spec: GpuNodeSpec, pod_cidr: str) -> dict[str, Any]:
    """The Node object for `spec`; KWOK keeps the status' capacity and fills in conditions."""
    resources = {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods, GPU_RESOURCE: str(spec.gpus)}
    labels = {
        HOSTNAME_LABEL: spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": f"kwok-{spec.gpus}x-{spec.gpu_product}",
        ZONE_LABEL: spec.zone,
        "type": "kwok",
        GPU_PRODUCT_LABEL: spec.gpu_product,
        "nvidia.com/gpu.count": str(spec.gpus),
        **spec.labels,
    }
    taints = [{"key": KWOK_TAINT_KEY, "value": KWOK_TAINT_VALUE, "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": labels,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_TAINT_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
                **spec.annotations,
            },
        },
        "spec": {
            "podCIDR": pod_cidr,
            "podCIDRs": [pod_cidr],
            "taints": taints if spec.taint else [],
        },
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
        },
    }


def default_gpu_nodes(
    count: int, *, gpus: int = 8, gpu_product: str = H100, zones: tuple[str, ...] = ("zone-a", "zone-b")
) -> list[GpuNodeSpec]:
    """`count` identical GPU nodes named gpu-node-0.., spread round-robin over `zones`."""
    return [
        GpuNodeSpec(name=f"gpu-node-{i}", gpus=gpus, gpu_product=gpu_product, zone=zones[i % len(zones)])
        for i in range(count)
    ]


KWOK_TOLERATION: dict[str, Any] = {
    "key": KWOK_TAINT_KEY,
    "operator": "Exists",
    "effect": "NoSchedule",
}
"""Add this to a pod's tolerations to let it land on the fake nodes."""
