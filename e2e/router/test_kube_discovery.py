"""The router discovers a fleet's instances in a real control plane: Ready pods of the fleet,
with the fleet's model name and policy, following pod deletion and fleet edits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from flotilla.api import labels
from flotilla.api.crdgen import render as render_crd
from flotilla.enginesim.process import free_port
from flotilla.localcluster.engines import EngineLauncher
from flotilla.localcluster.kubectl import Kubectl
from flotilla.localcluster.nodes import KWOK_TOLERATION
from flotilla.localcluster.podwatch import PodEngineWatcher
from flotilla.localcluster.readiness import wait_until
from flotilla.router.app import Router
from flotilla.router.config import KubernetesDiscoveryConfig, RouterConfig
from flotilla.router.discovery.kube import KubeDiscovery

pytestmark = pytest.mark.e2e

MODEL = "fleet-model"
SELECTOR = f"{labels.LABEL_MANAGED_BY}={labels.MANAGED_BY}"


def fleet_pod(name: str, node: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                labels.LABEL_MANAGED_BY: labels.MANAGED_BY,
                labels.LABEL_FLEET: "chat",
                labels.LABEL_MODEL: MODEL,
            },
        },
        "spec": {
            "nodeName": node,
            "tolerations": [KWOK_TOLERATION],
            "containers": [
                {
                    "name": labels.ENGINE_CONTAINER_NAME,
                    "image": "engine",
                    "ports": [{"name": labels.ENGINE_PORT_NAME, "containerPort": 8000}],
                }
            ],
        },
    }


@contextlib.asynccontextmanager
async def kube_router(kubeconfig: str, namespace: str) -> AsyncIterator[tuple[Router, str]]:
    config = RouterConfig(
        host="127.0.0.1",
        port=free_port(),
        scrape_interval_s=0.1,
        kubernetes=KubernetesDiscoveryConfig(namespace=namespace, kubeconfig=kubeconfig),
    )
    assert config.kubernetes is not None
    router = Router(config, KubeDiscovery(config.kubernetes), registry=CollectorRegistry())
    server = uvicorn.Server(
        uvicorn.Config(router.app(), host="127.0.0.1", port=config.port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        yield router, f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def test_router_follows_fleet_pods_and_fleet_policy(
    api: Any, namespace: str, kubectl: Kubectl, cluster: Any, engine_launcher: EngineLauncher
) -> None:
    from kubernetes_asyncio.client import CoreV1Api, CustomObjectsApi

    kubectl.apply(render_crd())
    kubectl("wait", "--for=condition=Established", f"crd/{labels.CRD_NAME}", "--timeout=60s")
    custom, core = CustomObjectsApi(api), CoreV1Api(api)
    fleet = {
        "apiVersion": labels.API_VERSION,
        "kind": labels.KIND,
        "metadata": {"name": "chat"},
        "spec": {
            "model": {"name": MODEL, "source": "org/tiny"},
            "replicas": 2,
            "router": {"policy": "round_robin"},
        },
    }
    await custom.create_namespaced_custom_object(
        labels.GROUP, labels.VERSION, namespace, labels.PLURAL, fleet
    )
    async with (
        PodEngineWatcher(api, engine_launcher, label_selector=SELECTOR, namespace=namespace),
        kube_router(str(cluster.kubeconfig), namespace) as (router, url),
        httpx.AsyncClient(trust_env=False, timeout=30) as client,
    ):
        for i, node in enumerate(("gpu-node-0", "gpu-node-1")):
            await core.create_namespaced_pod(namespace, body=fleet_pod(f"chat-{i}", node))

        async def two_routable() -> bool:
            return len(router.table.routable(MODEL)) == 2 and len(engine_launcher.ready_keys()) == 2

        await wait_until(two_routable, timeout_s=60, what="router sees both Ready fleet pods")
        assert router.table.routing(MODEL).policy == "round_robin"
        assert {r.id for r in router.table.all()} == {f"{namespace}/chat-0", f"{namespace}/chat-1"}
        assert [m["id"] for m in (await client.get(url + "/v1/models")).json()["data"]] == [MODEL]
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 3, "ignore_eos": True}
        for _ in range(4):
            r = await client.post(url + "/v1/completions", json=body)
            assert r.status_code == 200, r.text

        await custom.patch_namespaced_custom_object(
            labels.GROUP,
            labels.VERSION,
            namespace,
            labels.PLURAL,
            "chat",
            {"spec": {"router": {"policy": "prefix_affinity", "params": {"load_factor": 1.5}}}},
            _content_type="application/merge-patch+json",
        )

        async def repolicied() -> bool:
            routing = router.table.routing(MODEL)
            return (routing.policy, routing.params) == ("prefix_affinity", {"load_factor": 1.5})

        await wait_until(repolicied, timeout_s=30, what="fleet policy change reaches the router")

        await core.delete_namespaced_pod("chat-0", namespace)

        async def one_left() -> bool:
            return {r.id for r in router.table.all()} == {f"{namespace}/chat-1"}

        await wait_until(one_left, timeout_s=30, what="deleted pod leaves the rotation")
        for _ in range(4):
            r = await client.post(url + "/v1/completions", json=body)
            assert r.status_code == 200, r.text
