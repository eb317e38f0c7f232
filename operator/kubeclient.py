"""The operator's writes to the Kubernetes API (kubernetes_asyncio), counted per verb.

Every request the reconciler makes goes through here, so the benchmark can report requests made
and tests can substitute a fake with the same methods. Responses are returned as raw JSON dicts:
they feed the cache directly (write-through) without model conversions.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from flotilla.api import labels
from flotilla.kube.events import event_body
from flotilla.operator.observe import rfc3339

Obj = dict[str, Any]
COMPONENT = "flotilla-operator"
FAILED_SUFFIX = "_failed"
"""`requests` counts a refused or failed request again under its verb plus this suffix."""


class Writer(Protocol):
    """What the controller needs from the API (a fake implements it in tests)."""

    async def create_pod(self, namespace: str, body: Obj) -> Obj: ...
    async def delete_pod(self, namespace: str, name: str, *, force: bool) -> bool: ...
    async def patch_pod_metadata(
        self, namespace: str, name: str, pod_labels: dict[str, str], annotations: dict[str, str]
    ) -> Obj: ...
    async def patch_fleet_status(self, namespace: str, name: str, status: Obj) -> Obj: ...
    async def node_exists(self, name: str) -> bool: ...
    async def post_event(self, fleet: Obj, kind: str, reason: str, message: str) -> None: ...


class NotFoundError(Exception):
    pass


class KubeWriter:
    """Writer over a kubernetes_asyncio ApiClient."""

    def __init__(self, api_client: Any, clock: Callable[[], float] = time.time) -> None:
        from kubernetes_asyncio import client

        self._api = api_client
        self._clock = clock
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self.requests: Counter[str] = Counter()

    async def _raw(self, verb: str, call: Any, *args: Any, **kwargs: Any) -> Obj:
        from kubernetes_asyncio.client.exceptions import ApiException

        self.requests[verb] += 1
        try:
            resp = await call(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            self.requests[verb + FAILED_SUFFIX] += 1
            if exc.status == 404:
                raise NotFoundError(str(exc.reason)) from exc
            raise
        body = await resp.read()
        if not 200 <= resp.status <= 299:
            # Without preloading, the client hands back any status as a response: a refused write
            # (422 invalid pod, 409 conflict) must not pass for success with a Status as the object.
            self.requests[verb + FAILED_SUFFIX] += 1
            if resp.status == 404:
                raise NotFoundError(str(resp.reason))
            error = ApiException(status=resp.status, reason=resp.reason)
            error.body = body.decode(errors="replace")
            raise error
        out: Obj = json.loads(body) if body else {}
        return out

    async def create_pod(self, namespace: str, body: Obj) -> Obj:
        return await self._raw("create_pod", self._core.create_namespaced_pod, namespace, body)

    async def delete_pod(self, namespace: str, name: str, *, force: bool) -> bool:
        kwargs: dict[str, Any] = {"grace_period_seconds": 0} if force else {}
        try:
            await self._raw("delete_pod", self._core.delete_namespaced_pod, name, namespace, **kwargs)
        except NotFoundError:
            return False
        return True

    async def patch_pod_metadata(
        self, namespace: str, name: str, pod_labels: dict[str, str], annotations: dict[str, str]
    ) -> Obj:
        patch = {"metadata": {"labels": pod_labels, "annotations": annotations}}
        return await self._raw(
            "patch_pod",
            self._core.patch_namespaced_pod,
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
        )

    async def patch_fleet_status(self, namespace: str, name: str, status: Obj) -> Obj:
        # A JSON merge patch of the whole status replaces its lists (conditions, instances) as a whole.
        return await self._raw(
            "patch_status",
            self._custom.patch_namespaced_custom_object_status,
            labels.GROUP,
            labels.VERSION,
            namespace,
            labels.PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    async def node_exists(self, name: str) -> bool:
        try:
            await self._raw("get_node", self._core.read_node, name)
        except NotFoundError:
            return False
        return True

    async def post_event(self, fleet: Obj, kind: str, reason: str, message: str) -> None:
        meta = fleet.get("metadata") or {}
        now = rfc3339(self._clock())
        involved = {
            "apiVersion": labels.API_VERSION,
            "kind": labels.KIND,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        event = event_body(involved, reason, message, event_type=kind, component=COMPONENT, now=now)
        await self._raw("create_event", self._core.create_namespaced_event, meta.get("namespace"), event)
