"""The scheduler loop's only door to Kubernetes: a small Protocol and its kubernetes_asyncio implementation.

The loop is tested against a fake of `ClusterApi`; the real one lists nodes and pods as JSON dicts
(the shape `kubeconv` reads), binds through the pods/binding subresource, evicts through the Eviction
API (so PodDisruptionBudgets are honoured), writes core/v1 Events and the PodScheduled=False
condition of pods it cannot place (as kube-scheduler does: the operator, the one writer of fleet
status, turns those into the fleet's Unschedulable condition), and wakes the loop when pods or
nodes change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

from flotilla.api import labels as api
from flotilla.kube.events import event_body

COMPONENT = "flotilla-placement"


class ClusterApi(Protocol):
    async def list_nodes(self) -> list[dict[str, Any]]: ...

    async def list_pods(self) -> list[dict[str, Any]]: ...

    async def bind(self, pod: str, node: str) -> None: ...

    async def evict(self, pod: str) -> None: ...

    async def record_event(self, pod: str, reason: str, message: str, warning: bool) -> None: ...

    async def mark_unschedulable(self, pod: str, message: str) -> None: ...

    def changes(self) -> AsyncIterator[None]: ...


def split(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


class KubeClusterApi:
    """`ClusterApi` over a kubernetes_asyncio ApiClient (owned by the caller)."""

    def __init__(self, client: Any, scheduler_name: str = api.SCHEDULER_NAME) -> None:
        from kubernetes_asyncio.client import CoreV1Api

        self._client = client
        self._core: Any = CoreV1Api(client)
        self._scheduler_name = scheduler_name

    def _json(self, obj: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._client.sanitize_for_serialization(obj)
        return result

    async def list_nodes(self) -> list[dict[str, Any]]:
        nodes = await self._core.list_node()
        return [self._json(n) for n in nodes.items]

    async def list_pods(self) -> list[dict[str, Any]]:
        pods = await self._core.list_pod_for_all_namespaces()
        return [self._json(p) for p in pods.items]

    async def bind(self, pod: str, node: str) -> None:
        namespace, name = split(pod)
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        # the generated client fails to deserialise the binding response; it is not needed
        await self._core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)

    async def evict(self, pod: str) -> None:
        namespace, name = split(pod)
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        await self._core.create_namespaced_pod_eviction(name, namespace, body, _preload_content=False)

    async def record_event(self, pod: str, reason: str, message: str, warning: bool) -> None:
        namespace, name = split(pod)
        now = datetime.now(UTC).isoformat()
        involved = {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": namespace}
        kind = "Warning" if warning else "Normal"
        body = event_body(involved, reason, message, event_type=kind, component=COMPONENT, now=now)
        await self._core.create_namespaced_event(namespace, body)

    async def mark_unschedulable(self, pod: str, message: str) -> None:
        """PodScheduled=False, reason Unschedulable, on a pending pod (pods/status; binding sets it True)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        namespace, name = split(pod)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }
        try:
            # A strategic merge keys pod conditions by type: the pod's other conditions stay.
            await self._core.patch_namespaced_pod_status(
                name,
                namespace,
                {"status": {"conditions": [condition]}},
                _content_type="application/strategic-merge-patch+json",
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:  # the pod is gone: nothing to explain
                raise

    async def changes(self) -> AsyncIterator[None]:
        """Yields whenever a pod of ours or any node changes (a wake-up, not a state feed)."""
        from kubernetes_asyncio import watch

        queue: asyncio.Queue[None] = asyncio.Queue()

        async def follow(list_fn: Any, **kwargs: Any) -> None:
            while True:
                w = watch.Watch()
                try:
                    async for _ in w.stream(list_fn, timeout_seconds=60, **kwargs):
                        queue.put_nowait(None)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    await asyncio.sleep(1.0)  # the API server restarted or the watch expired
                finally:
                    w.stop()

        tasks = [
            asyncio.create_task(
                follow(
                    self._core.list_pod_for_all_namespaces,
                    field_selector=f"spec.schedulerName={self._scheduler_name}",
                )
            ),
            asyncio.create_task(follow(self._core.list_node)),
        ]
        try:
            while True:
                await queue.get()
                yield None
        finally:
            for task in tasks:
                task.cancel()
