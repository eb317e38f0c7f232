"""Replay benchmark scenarios on the REAL kube-scheduler (local control plane, KWOK GPU nodes).

This checks our kube-scheduler re-implementation against the genuine article on a subset of the
scenarios: the running pods are created already bound (nodeName), the pending ones in arrival order
with a PriorityClass per tier, and kube-scheduler (default profile, DefaultPreemption included)
schedules them. When bindings and deletions stop changing, the outcome is read back as a `Plan`, so
the same metrics apply to it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from flotilla.api import labels as api
from flotilla.placement.types.plan import Binding, Eviction, Plan, Status
from flotilla.placement.types.snapshot import Pod, Snapshot

POOL = "flotilla.dev/bench-pool"
TIER_VALUE = 1000  # PriorityClass value per tier


def _k8s_name(name: str) -> str:
    return name.lower().replace("/", "-").replace("_", "-")


def _pod_manifest(pod: Pod, pool: str, node: str | None) -> dict[str, Any]:
    r = pod.requests
    spec: dict[str, Any] = {
        "priorityClassName": f"flotilla-bench-tier-{pod.tier}",
        "nodeSelector": {POOL: pool, **dict(pod.node_selector)},
        "tolerations": [
            {
                k: v
                for k, v in (
                    ("key", t.key),
                    ("operator", t.operator),
                    ("value", t.value),
                    ("effect", t.effect),
                )
                if v
            }
            for t in pod.tolerations
        ],
        "containers": [
            {
                "name": "engine",
                "image": "engine",
                "resources": {
                    "requests": {
                        "cpu": f"{r.cpu_m}m",
                        "memory": f"{r.mem_mi}Mi",
                        api.GPU_RESOURCE: str(r.gpu),
                    },
                    "limits": {api.GPU_RESOURCE: str(r.gpu)},
                },
            }
        ],
    }
    if node is not None:
        spec["nodeName"] = node
    return {
        "metadata": {"name": _k8s_name(pod.name), "labels": {"fleet": _k8s_name(pod.fleet)}},
        "spec": spec,
    }


async def _observe(core: Any, namespace: str) -> dict[str, str | None]:
    pods = await core.list_namespaced_pod(namespace)
    return {p.metadata.name: p.spec.node_name for p in pods.items if not p.metadata.deletion_timestamp}


async def replay(cluster: Any, snapshot: Snapshot, settle_s: float = 6.0, timeout_s: float = 240.0) -> Plan:
    """Run one scenario through the cluster's kube-scheduler and return what it did, as a Plan."""
    from kubernetes_asyncio.client import CoreV1Api
    from kubernetes_asyncio.client.exceptions import ApiException

    from flotilla.localcluster.nodes import GpuNodeSpec

    tag = uuid.uuid4().hex[:6]
    started = time.perf_counter()
    node_of = {n.name: f"b{tag}-{_k8s_name(n.name)}" for n in snapshot.nodes}
    specs = [
        GpuNodeSpec(
            name=node_of[n.name],
            gpus=n.allocatable.gpu,
            cpu=f"{n.allocatable.cpu_m}m",
            memory=f"{n.allocatable.mem_mi}Mi",
            pods=str(n.allocatable.pods),
            labels={POOL: tag, **{k: v for k, v in n.labels if k != "kubernetes.io/hostname"}},
            taint=False,
        )
        for n in snapshot.nodes
    ]
    await cluster.add_gpu_nodes(specs, timeout_s=120)
    namespace = f"bench-{tag}"
    async with await cluster.api_client() as client:
        core: Any = CoreV1Api(client)
        await core.create_namespace({"metadata": {"name": namespace}})
        try:
            for pod in snapshot.bound:
                assert pod.node is not None
                await core.create_namespaced_pod(namespace, _pod_manifest(pod, tag, node_of[pod.node]))
            for pod in snapshot.pending:
                await core.create_namespaced_pod(namespace, _pod_manifest(pod, tag, None))
            last: dict[str, str | None] = {}
            stable_since = time.perf_counter()
            while time.perf_counter() - started < timeout_s:
                now = await _observe(core, namespace)
                if now != last:
                    last, stable_since = now, time.perf_counter()
                elif time.perf_counter() - stable_since > settle_s:
                    break
                await asyncio.sleep(0.5)
        finally:
            try:
                await core.delete_namespace(namespace)
                for name in node_of.values():
                    await core.delete_node(name)
            except ApiException:
                pass
    by_k8s = {_k8s_name(p.name): p for p in (*snapshot.bound, *snapshot.pending)}
    node_back = {v: k for k, v in node_of.items()}
    bindings = tuple(
        Binding(p.name, node_back[last[_k8s_name(p.name)] or ""])
        for p in snapshot.pending
        if last.get(_k8s_name(p.name))
    )
    evictions = tuple(
        Eviction(p.name, p.node or "", "preempted by kube-scheduler")
        for p in snapshot.bound
        if _k8s_name(p.name) not in last
    )
    assert set(last) <= set(by_k8s)
    return Plan(
        bindings=bindings,
        evictions=evictions,
        unplaced=tuple(p.name for p in snapshot.pending if not last.get(_k8s_name(p.name))),
        status=Status.HEURISTIC,
        approach="kube-scheduler (real, KWOK)",
        seconds=time.perf_counter() - started,
    )


async def ensure_priority_classes(cluster: Any, tiers: int = 4) -> None:
    from kubernetes_asyncio.client import SchedulingV1Api
    from kubernetes_asyncio.client.exceptions import ApiException

    async with await cluster.api_client() as client:
        scheduling: Any = SchedulingV1Api(client)
        for tier in range(tiers):
            body = {"metadata": {"name": f"flotilla-bench-tier-{tier}"}, "value": tier * TIER_VALUE}
            try:
                await scheduling.create_priority_class(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise


async def with_cluster(run_dir: Path, work: Any) -> Any:
    """Start a local control plane with kube-scheduler and no nodes, run `work(cluster)`, stop it."""
    from flotilla.localcluster.binaries import ensure_binaries
    from flotilla.localcluster.controlplane import ClusterConfig, LocalCluster

    binaries = ensure_binaries(build=False)
    config = ClusterConfig(name="flotilla-bench", gpu_nodes=0, scheduler=True)
    async with LocalCluster(config, run_dir, binaries) as cluster:
        await ensure_priority_classes(cluster)
        return await work(cluster)
