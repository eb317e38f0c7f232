"""The harness behaves like a real cluster where later tests rely on it: garbage collection of
owned pods, node lifecycle (NotReady taints), KWOK's pod life cycle, and engines that follow pods."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from flotilla.localcluster.engines import EngineLauncher
from flotilla.localcluster.nodes import KWOK_TOLERATION, NODE_NOT_READY_LABEL, POD_FAIL_LABEL
from flotilla.localcluster.podwatch import PodEngineWatcher
from flotilla.localcluster.readiness import wait_until

pytestmark = pytest.mark.e2e


def pod_on(node: str, name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    """A pod bound directly to `node` (no scheduler needed), tolerating KWOK's taint."""
    return {
        "metadata": {"name": name, "labels": labels or {}, **meta},
        "spec": {
            "nodeName": node,
            "tolerations": [KWOK_TOLERATION],
            "containers": [
                {"name": "engine", "image": "engine", "ports": [{"name": "http", "containerPort": 8000}]}
            ],
        },
    }


async def pod_status(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes_asyncio.client import CoreV1Api
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        pod = await CoreV1Api(api).read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    status: dict[str, Any] = api.sanitize_for_serialization(pod)["status"]
    return status


async def test_garbage_collector_deletes_pods_of_a_deleted_owner(api: Any, namespace: str) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    core = CoreV1Api(api)
    owner = await core.create_namespaced_config_map(namespace, body={"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    await core.create_namespaced_pod(
        namespace, body=pod_on("gpu-node-0", "owned", ownerReferences=[reference])
    )

    async def running() -> bool:
        status = await pod_status(api, namespace, "owned")
        return status is not None and status.get("phase") == "Running"

    await wait_until(running, timeout_s=30, what="owned pod Running")
    await core.delete_namespaced_config_map("owner", namespace)

    async def gone() -> bool:
        return await pod_status(api, namespace, "owned") is None

    await wait_until(gone, timeout_s=30, what="owned pod garbage-collected")


async def test_node_lifecycle_taints_a_not_ready_node_and_lifts_it(
    api: Any, gpu_nodes: Callable[..., Awaitable[list[str]]]
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    core = CoreV1Api(api)
    [name] = await gpu_nodes(1, gpus=4, zone="zone-c")

    async def taint_keys() -> set[str]:
        node = await core.read_node(name)
        return {t.key for t in node.spec.taints or []}

    await core.patch_node(name, {"metadata": {"labels": {NODE_NOT_READY_LABEL: "true"}}})

    async def tainted() -> bool:
        return "node.kubernetes.io/not-ready" in await taint_keys()

    await wait_until(tainted, timeout_s=30, what="node-lifecycle not-ready taint")
    await core.patch_node(name, {"metadata": {"labels": {NODE_NOT_READY_LABEL: None}}})

    async def untainted() -> bool:
        return "node.kubernetes.io/not-ready" not in await taint_keys()

    await wait_until(untainted, timeout_s=30, what="not-ready taint lifted")


async def test_pod_failure_switch_fails_a_running_pod(api: Any, namespace: str) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    await CoreV1Api(api).create_namespaced_pod(
        namespace, body=pod_on("gpu-node-1", "doomed", labels={POD_FAIL_LABEL: "true"})
    )

    async def failed() -> bool:
        status = await pod_status(api, namespace, "doomed")
        return status is not None and status.get("phase") == "Failed"

    await wait_until(failed, timeout_s=30, what="pod phase Failed")


async def test_watcher_runs_an_engine_per_pod_and_stops_it_with_the_pod(
    api: Any, namespace: str, engine_launcher: EngineLauncher
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    core = CoreV1Api(api)
    labels = {"app": "watched", "flotilla.dev/model": "watched-model"}
    async with PodEngineWatcher(
        api, engine_launcher, label_selector="app=watched", namespace=namespace
    ) as watcher:
        for i, node in enumerate(("gpu-node-0", "gpu-node-1")):
            await core.create_namespaced_pod(namespace, body=pod_on(node, f"w{i}", labels=labels))

        async def two_engines() -> bool:
            return len(engine_launcher.ready_keys()) == 2

        await wait_until(two_engines, timeout_s=60, what="two engines started by the watcher")
        assert watcher.failures == {}
        endpoints = [e.endpoint for e in engine_launcher.engines.values()]
        assert len({e.ip for e in endpoints}) == 2  # each pod has its own address
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            for endpoint in endpoints:
                assert ipaddress.ip_address(endpoint.ip).is_loopback
                models = (await client.get(f"{endpoint.url}/v1/models")).json()
                assert [m["id"] for m in models["data"]] == ["watched-model"]

        await core.delete_namespaced_pod("w0", namespace)

        async def one_engine() -> bool:
            return {k.split("/")[1] for k in engine_launcher.running_keys()} == {"w1"}

        await wait_until(one_engine, timeout_s=30, what="engine of deleted pod w0 stopped")
        gone = next(e for e in endpoints if e.name == "w0")
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{gone.url}/health")
    assert engine_launcher.running_keys() == set()  # leaving the watcher stops its engines
