"""API calls on nodes and namespaces that the cluster and the tests share (kubernetes_asyncio)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flotilla.localcluster.nodes import (
    NODE_PREFIX,
    NODE_SUBNETS,
    POD_NETWORK,
    GpuNodeSpec,
    gpu_node_manifest,
    node_pod_cidr,
)
from flotilla.localcluster.process import ManagedProcess
from flotilla.localcluster.readiness import wait_until

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient


def _used_cidr_indices(pod_cidrs: Sequence[str | None]) -> set[int]:
    used = set()
    for cidr in pod_cidrs:
        if not cidr:
            continue
        network = ipaddress.ip_network(cidr, strict=False)
        if isinstance(network, ipaddress.IPv4Network) and network.subnet_of(POD_NETWORK):
            offset = int(network.network_address) - int(POD_NETWORK.network_address)
            used.add(offset >> (32 - NODE_PREFIX))
    return used


def free_cidr_indices(pod_cidrs: Sequence[str | None], count: int, *, first: int = 0) -> list[int]:
    """The `count` node CIDR indices, from `first` upwards (wrapping), not used by any of `pod_cidrs`.

    When some of `pod_cidrs` lie in the pod network, numbering continues from the lowest of them
    rather than from `first`: a cluster keeps to the block its first nodes took, whoever adds more.
    """
    used = _used_cidr_indices(pod_cidrs)
    if count > NODE_SUBNETS - len(used):
        raise ValueError(f"only {NODE_SUBNETS - len(used)} node subnets are free, {count} asked")
    start = min(used) if used else first
    free: list[int] = []
    index = start
    while len(free) < count:
        if index not in used:
            free.append(index)
        index = (index + 1) % NODE_SUBNETS
    return free


async def create_gpu_nodes(
    api: ApiClient, specs: Sequence[GpuNodeSpec], *, first_index: int = 0
) -> list[str]:
    """Create the nodes, each with a pod CIDR no existing node uses; returns their names.

    `first_index` is where a cluster with no nodes yet starts numbering its node subnets.
    """
    from kubernetes_asyncio.client import CoreV1Api

    core = CoreV1Api(api)
    existing = await core.list_node()
    indices = free_cidr_indices([n.spec.pod_cidr for n in existing.items], len(specs), first=first_index)
    for spec, index in zip(specs, indices, strict=True):
        # The client sends a plain dict as it is, which keeps the manifest (and its status) exact.
        manifest: Any = gpu_node_manifest(spec, node_pod_cidr(index))
        await core.create_node(body=manifest)
    return [spec.name for spec in specs]


def _ready(node: object) -> bool:
    conditions = getattr(getattr(node, "status", None), "conditions", None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


async def wait_nodes_ready(
    api: ApiClient, names: Sequence[str], *, timeout_s: float, process: ManagedProcess | None = None
) -> None:
    """Wait until every named node reports Ready=True (KWOK's node-initialize stage)."""
    from kubernetes_asyncio.client import CoreV1Api

    core = CoreV1Api(api)
    wanted = set(names)

    async def check() -> bool:
        nodes = await core.list_node()
        ready = {n.metadata.name for n in nodes.items if _ready(n)}
        return wanted <= ready

    await wait_until(check, timeout_s=timeout_s, what=f"nodes Ready: {sorted(wanted)}", process=process)


async def wait_default_service_account(
    api: ApiClient, namespace: str, *, timeout_s: float, process: ManagedProcess | None = None
) -> None:
    """Wait for the namespace's `default` ServiceAccount: admission rejects pods until it exists."""
    from kubernetes_asyncio.client import CoreV1Api
    from kubernetes_asyncio.client.exceptions import ApiException

    core = CoreV1Api(api)

    async def check() -> bool:
        try:
            await core.read_namespaced_service_account("default", namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    await wait_until(check, timeout_s=timeout_s, what=f"ServiceAccount {namespace}/default", process=process)
