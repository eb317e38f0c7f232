import ipaddress

import pytest

from flotilla.localcluster.nodeops import free_cidr_indices
from flotilla.localcluster.nodes import (
    KWOK_MANAGE_SELECTOR,
    NODE_SUBNETS,
    POD_NETWORK,
    GpuNodeSpec,
    default_gpu_nodes,
    gpu_node_manifest,
    node_pod_cidr,
)


def test_node_pod_cidrs_are_disjoint_loopback_slices_of_the_pod_network() -> None:
    cidrs = [ipaddress.ip_network(node_pod_cidr(i)) for i in (0, 1, 255, 256, 32767)]
    assert [str(c) for c in cidrs[:4]] == [
        "127.128.0.0/24",
        "127.128.1.0/24",
        "127.128.255.0/24",
        "127.129.0.0/24",
    ]
    assert str(cidrs[4]) == "127.255.255.0/24"
    for a in cidrs:
        assert a.subnet_of(POD_NETWORK)
        assert a.network_address.is_loopback
        assert sum(a.overlaps(b) for b in cidrs) == 1
    with pytest.raises(ValueError):
        node_pod_cidr(32768)


def test_free_cidr_indices_skips_used_and_foreign_cidrs() -> None:
    used = [node_pod_cidr(0), node_pod_cidr(2), None, "10.0.0.0/24", "127.0.0.0/24"]
    assert free_cidr_indices(used, 3) == [1, 3, 4]
    assert free_cidr_indices([], 0) == []


def test_free_cidr_indices_start_at_the_clusters_block_and_keep_to_it() -> None:
    assert free_cidr_indices([], 2, first=512) == [512, 513]
    # Once the cluster has nodes, numbering continues from its block whatever `first` says.
    assert free_cidr_indices([node_pod_cidr(512)], 2, first=0) == [513, 514]
    last = NODE_SUBNETS - 1
    assert free_cidr_indices([], 2, first=last) == [last, 0]
    with pytest.raises(ValueError, match="node subnets are free"):
        free_cidr_indices([], NODE_SUBNETS + 1)


def test_gpu_node_manifest_carries_gpus_labels_kwok_marks_and_pod_cidr() -> None:
    spec = GpuNodeSpec(
        name="n1", gpus=4, gpu_product="NVIDIA-A100-SXM4-80GB", zone="zone-z", labels={"pool": "x"}
    )
    node = gpu_node_manifest(spec, "127.128.7.0/24")
    meta, status = node["metadata"], node["status"]
    assert meta["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert meta["labels"]["topology.kubernetes.io/zone"] == "zone-z"
    assert meta["labels"]["kubernetes.io/hostname"] == "n1"
    assert meta["labels"]["pool"] == "x"
    key, value = KWOK_MANAGE_SELECTOR.split("=")
    assert meta["annotations"][key] == value
    assert node["spec"]["taints"] == [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]
    assert node["spec"]["podCIDR"] == "127.128.7.0/24"
    assert node["spec"]["podCIDRs"] == ["127.128.7.0/24"]
    for part in ("capacity", "allocatable"):
        assert status[part]["nvidia.com/gpu"] == "4"
        assert set(status[part]) == {"cpu", "memory", "pods", "nvidia.com/gpu"}
    assert gpu_node_manifest(GpuNodeSpec(name="n2", taint=False), "127.128.8.0/24")["spec"]["taints"] == []


def test_default_gpu_nodes_alternate_zones() -> None:
    nodes = default_gpu_nodes(3, zones=("a", "b"))
    assert [(n.name, n.zone, n.gpus) for n in nodes] == [
        ("gpu-node-0", "a", 8),
        ("gpu-node-1", "b", 8),
        ("gpu-node-2", "a", 8),
    ]
