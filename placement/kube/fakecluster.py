"""An in-memory `ClusterApi` beside the real one, and builders of the node and pod JSON it serves.

The loop's tests run against it: binding sets the pod's nodeName (and refuses a bound pod, as the
API server does with a Conflict), eviction deletes the pod at once (as if it terminated), and every
Event and PodScheduled=False condition the loop writes is kept for assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from flotilla.api import labels as api

NAMESPACE = "ns"


def node_json(name: str, gpus: int = 8) -> dict[str, Any]:
    """A Ready node with `gpus` GPUs and room for everything else."""
    allocatable = {"cpu": "128", "memory": "2048Gi", "pods": "110", api.GPU_RESOURCE: str(gpus)}
    return {
        "metadata": {"name": name, "labels": {}},
        "spec": {},
        "status": {"allocatable": allocatable, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def pod_json(name: str, gpus: int, tier: int, node: str | None = None) -> dict[str, Any]:
    """A fleet pod of fleet `name`'s prefix (before the first '-'), bound to `node` when given."""
    spec: dict[str, Any] = {
        "schedulerName": api.SCHEDULER_NAME,
        "containers": [{"name": "engine", "resources": {"limits": {api.GPU_RESOURCE: str(gpus)}}}],
    }
    if node:
        spec["nodeName"] = node
    pod_labels = {
        api.LABEL_FLEET: name.split("-", 1)[0],
        api.LABEL_TIER: str(tier),
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
    }
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": pod_labels},
        "spec": spec,
        "status": {"phase": "Running" if node else "Pending"},
    }


class FakeClusterApi:
    """A `ClusterApi` over lists of node and pod JSON; binding a pod named in `refuse` fails."""

    def __init__(
        self, nodes: list[dict[str, Any]], pods: Iterable[dict[str, Any]], refuse: Iterable[str] = ()
    ) -> None:
        self.nodes = nodes
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.refuse = set(refuse)
        self.events: list[tuple[str, str, str]] = []
        """(pod key, reason, message) of every Event recorded."""
        self.marked: list[tuple[str, str]] = []
        """(pod key, message) of every PodScheduled=False written."""
        self.evicted: list[str] = []

    async def list_nodes(self) -> list[dict[str, Any]]:
        return self.nodes

    async def list_pods(self) -> list[dict[str, Any]]:
        return list(self.pods.values())

    async def bind(self, pod: str, node: str) -> None:
        p = self.pods[_name(pod)]
        if _name(pod) in self.refuse:
            raise RuntimeError("Conflict: pod is being deleted")
        if p["spec"].get("nodeName"):
            raise RuntimeError(f"Conflict: pod {pod} is already assigned to a node")
        p["spec"]["nodeName"] = node
        p["status"]["phase"] = "Running"

    async def evict(self, pod: str) -> None:
        self.evicted.append(pod)
        del self.pods[_name(pod)]

    async def record_event(self, pod: str, reason: str, message: str, warning: bool) -> None:
        self.events.append((pod, reason, message))

    async def mark_unschedulable(self, pod: str, message: str) -> None:
        self.marked.append((pod, message))
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        self.pods[_name(pod)]["status"]["conditions"] = [cond]

    async def changes(self) -> AsyncIterator[None]:
        while True:
            await asyncio.sleep(3600)
            yield None


def _name(key: str) -> str:
    return key.split("/", 1)[1]
