"""Fill the cache with one LIST per kind before any reconcile, like an informer's initial sync.

Kopf delivers its initial listing as ordinary events, with no signal of when it is complete; a
reconcile that ran before a fleet's pods had arrived would create them a second time. So the
workers start only after these lists; Kopf's watch events then keep the cache current.
"""

from __future__ import annotations

import json
from typing import Any

from flotilla.api import labels
from flotilla.operator.cache import ClusterCache


async def _list(api: Any, path: str, query: dict[str, str] | None = None) -> list[dict[str, Any]]:
    items, _ = await _list_at(api, path, query)
    return items


async def _list_at(
    api: Any, path: str, query: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """All items of a (paged) LIST, and the resourceVersion it was taken at."""
    items: list[dict[str, Any]] = []
    params = dict(query or {})
    version: int | None = None
    while True:
        resp = await api.call_api(
            path,
            "GET",
            query_params=list(params.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        response = resp[0] if isinstance(resp, tuple) else resp
        page = json.loads(await response.read())
        items += page.get("items") or []
        meta = page.get("metadata") or {}
        if version is None and str(meta.get("resourceVersion", "")).isdigit():
            version = int(meta["resourceVersion"])
        token = meta.get("continue")
        if not token:
            return items, version
        params["continue"] = token


async def prime_cache(api: Any, cache: ClusterCache, namespaces: list[str]) -> None:
    selector = {"labelSelector": labels.LABEL_FLEET, "limit": "500"}
    if namespaces:
        for ns in namespaces:
            for pod in await _list(api, f"/api/v1/namespaces/{ns}/pods", selector):
                cache.apply_pod(None, pod)
            for fleet in await _list(api, f"/apis/{labels.API_VERSION}/namespaces/{ns}/{labels.PLURAL}"):
                cache.apply_fleet(None, fleet)
    else:
        for pod in await _list(api, "/api/v1/pods", selector):
            cache.apply_pod(None, pod)
        for fleet in await _list(api, f"/apis/{labels.API_VERSION}/{labels.PLURAL}"):
            cache.apply_fleet(None, fleet)
    for node in await _list(api, "/api/v1/nodes", {"limit": "500"}):
        cache.apply_node(None, node)
    for pc in await _list(api, "/apis/scheduling.k8s.io/v1/priorityclasses"):
        cache.apply_priority_class(None, pc)


async def relist_nodes(api: Any, cache: ClusterCache) -> list[str]:
    """Re-sync the cache's nodes with a LIST; returns the nodes it had kept but the API has not."""
    items, version = await _list_at(api, "/api/v1/nodes", {"limit": "500"})
    return cache.replace_nodes(items, version)
