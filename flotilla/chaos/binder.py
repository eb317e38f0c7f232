"""The chaos rig's stand-in for the placement scheduler: bind the namespace's unbound fleet pods to
the rig's own Ready nodes, fewest pods first.

Chaos tests share the e2e session cluster with other tests' nodes; the real placement scheduler
considers every node, so the rig binds its pods itself, to nodes selected by its label. A node
that is deleted or NotReady gets nothing; binding retries every 0.2 s (through API server restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from typing import Any

from flotilla.api import labels


def node_ready(node: dict[str, Any]) -> bool:
    if (node.get("spec") or {}).get("unschedulable") or node["metadata"].get("deletionTimestamp"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def choose_node(nodes: Iterable[str], bound: Iterable[str]) -> str | None:
    """The node with the fewest of our pods (by name on ties); None when there is none."""
    load = dict.fromkeys(nodes, 0)
    for node in bound:
        if node in load:
            load[node] += 1
    return min(load, key=lambda n: (load[n], n)) if load else None


async def bind_once(api: Any, namespace: str, node_selector: str) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    core: Any = CoreV1Api(api)
    nodes = await core.list_node(label_selector=node_selector, _preload_content=False)
    ready = [n["metadata"]["name"] for n in json.loads(await nodes.read())["items"] if node_ready(n)]
    response = await core.list_namespaced_pod(namespace, _preload_content=False)
    pods = [
        p for p in json.loads(await response.read())["items"] if not p["metadata"].get("deletionTimestamp")
    ]
    bound = [p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")]
    for pod in pods:
        if pod["spec"].get("nodeName") or pod["spec"].get("schedulerName") != labels.SCHEDULER_NAME:
            continue
        node = choose_node(ready, bound)
        if node is None:
            return
        name = pod["metadata"]["name"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        await core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
        bound.append(node)


async def bind_forever(api: Any, namespace: str, node_selector: str, period_s: float = 0.2) -> None:
    while True:
        with contextlib.suppress(Exception):  # the API server may be down (a fault): retry
            await bind_once(api, namespace, node_selector)
        await asyncio.sleep(period_s)
