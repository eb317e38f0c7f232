"""Kubernetes discovery: watch InferenceFleets and their pods; a pod is an instance once Ready.

The model name and its routing settings come from the fleet (`spec.model.name`, `spec.router`),
resolved once per model; a pod whose fleet has not been seen yet is an instance of the model its
own label names, routed with the router's defaults. Both resources are followed with
list-then-watch loops that relist after an expired resourceVersion or a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import ValidationError

from flotilla.api import InferenceFleetSpec, labels
from flotilla.kube.config import load_configuration
from flotilla.router.config import KubernetesDiscoveryConfig
from flotilla.router.discovery import Discovered, OnUpdate
from flotilla.router.instances import InstanceSpec
from flotilla.router.model_routing import ModelRouting

log = logging.getLogger("flotilla.router.discovery")

RELIST_BACKOFF_S = 1.0


@dataclass(frozen=True)
class FleetRouting:
    model: str
    routing: ModelRouting


def fleet_routing(obj: dict[str, Any]) -> FleetRouting | None:
    try:
        spec = InferenceFleetSpec.model_validate(obj.get("spec") or {})
    except ValidationError as e:
        log.warning(
            "fleet spec not understood", extra={"fleet": obj.get("metadata", {}).get("name"), "error": str(e)}
        )
        return None
    router = spec.router
    routing = ModelRouting(
        policy=router.policy,
        params=router.params or {},
        predictor=router.predictor.name if router.predictor else None,
        slice_tokens=router.slice_tokens,
    )
    return FleetRouting(spec.model.name, routing)


def model_routing(fleets: dict[tuple[str, str], FleetRouting]) -> dict[str, ModelRouting]:
    """Each model's routing settings (pure): a model served by several fleets takes the first
    fleet's by namespace/name (discovery warns when the others differ)."""
    out: dict[str, ModelRouting] = {}
    for _, fleet in sorted(fleets.items()):
        out.setdefault(fleet.model, fleet.routing)
    return out


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _engine_port(pod: dict[str, Any], override: int | None) -> int:
    if override:
        return override
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == labels.ENGINE_CONTAINER_NAME:
            for port in container.get("ports") or []:
                if port.get("name") == labels.ENGINE_PORT_NAME and port.get("containerPort"):
                    return int(port["containerPort"])
    return labels.ENGINE_PORT


def instance_specs(
    fleets: dict[tuple[str, str], FleetRouting], pods: dict[tuple[str, str], dict[str, Any]], port: int | None
) -> list[InstanceSpec]:
    """The routable instances: Ready pods of known fleets (pure; unit-tested)."""
    out: list[InstanceSpec] = []
    for (ns, name), pod in sorted(pods.items()):
        if not _pod_ready(pod):
            continue
        meta = pod.get("metadata") or {}
        pod_labels = meta.get("labels") or {}
        fleet = fleets.get((ns, pod_labels.get(labels.LABEL_FLEET, "")))
        model = fleet.model if fleet else pod_labels.get(labels.LABEL_MODEL)
        if not model:
            continue
        ip = pod["status"]["podIP"]
        host = f"[{ip}]" if ":" in ip else ip
        out.append(
            InstanceSpec(
                id=f"{ns}/{name}",
                url=f"http://{host}:{_engine_port(pod, port)}",
                model=model,
            )
        )
    return out


class KubeDiscovery:
    def __init__(
        self,
        config: KubernetesDiscoveryConfig,
        api_client_factory: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._config = config
        self._factory = api_client_factory or self._default_client
        self._fleets: dict[tuple[str, str], FleetRouting] = {}
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._published: Discovered | None = None

    async def _default_client(self) -> Any:
        """An ApiClient with its own Configuration (kubernetes_asyncio's default one is a global)."""
        from kubernetes_asyncio import client

        return client.ApiClient(configuration=await load_configuration(self._config.kubeconfig))

    async def run(self, on_update: OnUpdate) -> None:
        from kubernetes_asyncio import client

        api = await self._factory()
        try:
            custom = client.CustomObjectsApi(api)
            core = client.CoreV1Api(api)
            ns = self._config.namespace
            list_fleets: Callable[..., Awaitable[Any]]
            list_pods: Callable[..., Awaitable[Any]]
            if ns:
                list_fleets = partial(
                    custom.list_namespaced_custom_object, labels.GROUP, labels.VERSION, ns, labels.PLURAL
                )
                list_pods = partial(core.list_namespaced_pod, ns)
            else:
                list_fleets = partial(
                    custom.list_cluster_custom_object, labels.GROUP, labels.VERSION, labels.PLURAL
                )
                list_pods = partial(core.list_pod_for_all_namespaces)
            selector = f"{labels.LABEL_MANAGED_BY}={labels.MANAGED_BY}"

            unlisted = {"fleets", "pods"}

            def publish() -> None:
                # Until both first lists are in, the stores are partial: publishing them would make
                # a new router replica answer "model does not exist" for a served model.
                if unlisted:
                    return
                specs = instance_specs(self._fleets, self._pods, self._config.port)
                now = Discovered(tuple(specs), model_routing(self._fleets))
                if now != self._published:
                    self._published = now
                    on_update(now)

            def on_fleet(kind: str, obj: dict[str, Any]) -> None:
                key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                fleet = fleet_routing(obj) if kind != "DELETED" else None
                if fleet is None:
                    self._fleets.pop(key, None)
                else:
                    self._fleets[key] = fleet
                    chosen = model_routing(self._fleets)[fleet.model]
                    if chosen != fleet.routing:
                        log.warning(
                            "model served by several fleets with different spec.router: the first"
                            " fleet's (by namespace/name) is used",
                            extra={"fleet": "/".join(key), "model": fleet.model},
                        )
                publish()

            def on_pod(kind: str, obj: dict[str, Any]) -> None:
                key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                if kind == "DELETED":
                    self._pods.pop(key, None)
                else:
                    self._pods[key] = obj
                publish()

            def listed(what: str) -> None:
                unlisted.discard(what)
                publish()

            await asyncio.gather(
                _list_watch(
                    api, list_fleets, {}, on_fleet, self._fleets, on_listed=partial(listed, "fleets")
                ),
                _list_watch(
                    api,
                    list_pods,
                    {"label_selector": selector},
                    on_pod,
                    self._pods,
                    on_listed=partial(listed, "pods"),
                ),
            )
        finally:
            with contextlib.suppress(Exception):
                await api.close()


async def _list_watch(
    api: Any,
    list_fn: Callable[..., Awaitable[Any]],
    kwargs: dict[str, Any],
    on_event: Callable[[str, dict[str, Any]], None],
    store: dict[tuple[str, str], Any],
    *,
    on_listed: Callable[[], None] = lambda: None,
) -> None:
    """List (replacing the store), then watch from the list's resourceVersion; relist on errors.
    `on_listed` runs after each complete list."""
    from kubernetes_asyncio import watch
    from kubernetes_asyncio.client.exceptions import ApiException

    while True:
        try:
            listing = await list_fn(**kwargs)
            listing = listing if isinstance(listing, dict) else api.sanitize_for_serialization(listing)
            seen = set()
            for item in listing.get("items") or []:
                seen.add((item["metadata"].get("namespace", ""), item["metadata"]["name"]))
                on_event("ADDED", item)
            for key in [k for k in store if k not in seen]:
                on_event("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
            on_listed()
            rv = (listing.get("metadata") or {}).get("resourceVersion")
            async with watch.Watch() as w:
                async for event in w.stream(list_fn, resource_version=rv, timeout_seconds=300, **kwargs):
                    obj = event["object"]
                    obj = obj if isinstance(obj, dict) else api.sanitize_for_serialization(obj)
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        on_event(event["type"], obj)
        except asyncio.CancelledError:
            raise
        except (ApiException, OSError, ValueError) as e:
            log.warning("watch interrupted, relisting", extra={"error": repr(e)})
            await asyncio.sleep(RELIST_BACKOFF_S)
        except Exception as e:  # the watch stream surfaces aiohttp errors of many kinds
            log.warning("watch failed, relisting", extra={"error": repr(e)})
            await asyncio.sleep(RELIST_BACKOFF_S)
