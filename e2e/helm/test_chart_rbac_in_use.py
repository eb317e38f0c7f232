"""The chart's ServiceAccounts are enough to run the system, and refuse what they must not do.

After `helm install`, each component runs with a token of its own ServiceAccount (TokenRequest),
as it would in its pod: the operator as `flotilla operator run`, the placement loop and the
router's Kubernetes discovery in-process. A fleet applied by the admin must then go all the way:
pods created (operator), bound (placement), Ready (KWOK), routed to (router). Each identity is
then refused a write outside its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flotilla.api import labels
from flotilla.kube.config import load_configuration
from flotilla.localcluster.binaries import find_repo_root
from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.readiness import wait_until
from flotilla.localcluster.serviceaccount import service_account_kubeconfig
from flotilla.placement.kube.clusterapi import KubeClusterApi
from flotilla.placement.kube.loop import LoopConfig, PlacementLoop
from flotilla.router.config import KubernetesDiscoveryConfig
from flotilla.router.discovery import Discovered
from flotilla.router.discovery.kube import KubeDiscovery

pytestmark = pytest.mark.e2e

CHART = find_repo_root(Path(__file__).resolve()) / "helm" / "flotilla"


@contextlib.asynccontextmanager
async def client_of(kubeconfig: Path) -> AsyncIterator[Any]:
    from kubernetes_asyncio import client

    async with client.ApiClient(configuration=await load_configuration(kubeconfig)) as api:
        yield api


async def refused(call: Any) -> bool:
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        await call
    except ApiException as exc:
        return exc.status == 403
    return False


def pod_body(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}}


async def test_components_run_with_the_charts_service_accounts(
    cluster: LocalCluster, api: Any, namespace: str, tmp_path: Path
) -> None:
    from kubernetes_asyncio.client import CoreV1Api, CustomObjectsApi

    release = f"fl-{uuid.uuid4().hex[:6]}"
    helm = [str(cluster.binaries.helm), f"--kubeconfig={cluster.kubeconfig}", "-n", namespace]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    await asyncio.to_thread(
        subprocess.run, [*helm, "install", release, str(CHART)], check=True, capture_output=True, env=env
    )
    try:
        configs = {
            c: await service_account_kubeconfig(
                api, cluster, namespace, f"{release}-flotilla-{c}", tmp_path / f"{c}.yaml"
            )
            for c in ("operator", "placement", "router")
        }
        operator_log = tmp_path / "operator.log"
        with operator_log.open("wb") as log:
            operator = await asyncio.create_subprocess_exec(
                *[
                    sys.executable,
                    "-c",
                    "from flotilla.cli import main; main()",
                    "operator",
                    "run",
                    f"--kubeconfig={configs['operator']}",
                    f"--namespace={namespace}",
                    "--tolerate-kwok",
                    f"--lease-namespace={namespace}",
                    f"--lease-name={release}-flotilla-operator",
                    "--resync=2",
                    "--lease-duration=3",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        seen: list[Discovered] = [Discovered()]
        stop = asyncio.Event()
        try:
            async with client_of(configs["placement"]) as placement_api:
                loop = PlacementLoop(
                    KubeClusterApi(placement_api),
                    LoopConfig(budget_s=1.0, batch_window_s=0.1, resync_s=0.5, workers=1),
                )
                discovery = KubeDiscovery(KubernetesDiscoveryConfig(kubeconfig=str(configs["router"])))
                tasks = [
                    asyncio.create_task(loop.run(stop)),
                    asyncio.create_task(discovery.run(seen.append)),
                ]
                try:
                    fleet = {
                        "apiVersion": labels.API_VERSION,
                        "kind": labels.KIND,
                        "metadata": {"name": "rbac-chain"},
                        "spec": {"model": {"name": "rbac-model", "source": "org/m"}, "replicas": 2},
                    }
                    await CustomObjectsApi(api).create_namespaced_custom_object(
                        labels.GROUP, labels.VERSION, namespace, labels.PLURAL, fleet
                    )

                    async def routed() -> bool:
                        ours = [
                            s
                            for s in seen[-1].instances
                            if s.id.startswith(f"{namespace}/") and s.model == "rbac-model"
                        ]
                        return len(ours) == 2

                    await wait_until(
                        routed, timeout_s=90, what="2 routed instances of the fleet", interval_s=0.3
                    )

                    async def status_written() -> bool:
                        obj = await CustomObjectsApi(api).get_namespaced_custom_object(
                            labels.GROUP, labels.VERSION, namespace, labels.PLURAL, "rbac-chain"
                        )
                        # Written by the operator through its ServiceAccount (inferencefleets/status).
                        return bool((obj.get("status") or {}).get("readyReplicas") == 2)

                    await wait_until(status_written, timeout_s=30, what="the fleet's status", interval_s=0.3)
                    pods = await CoreV1Api(api).list_namespaced_pod(
                        namespace, label_selector=f"{labels.LABEL_FLEET}=rbac-chain"
                    )
                    assert all(p.spec.node_name for p in pods.items)
                    events = await CoreV1Api(api).list_namespaced_event(namespace)
                    assert any(
                        e.reason == "Scheduled" and e.source.component == "flotilla-placement"
                        for e in events.items
                    )

                    # Each identity is refused what is not its job.
                    async with client_of(configs["router"]) as router_api:
                        core = CoreV1Api(router_api)
                        assert await refused(core.create_namespaced_pod(namespace, pod_body("r")))
                        assert await refused(core.list_namespaced_secret(namespace))
                    core = CoreV1Api(placement_api)
                    assert await refused(core.delete_namespaced_pod(pods.items[0].metadata.name, namespace))
                    assert await refused(core.create_namespaced_pod(namespace, pod_body("p")))
                    async with client_of(configs["operator"]) as operator_api:
                        core = CoreV1Api(operator_api)
                        assert await refused(core.list_namespaced_secret(namespace))
                        assert await refused(core.delete_node(pods.items[0].spec.node_name))
                        binding = {
                            "target": {"apiVersion": "v1", "kind": "Node", "name": "gpu-node-0"},
                            "metadata": {"name": "x"},
                        }
                        assert await refused(core.create_namespaced_pod_binding("x", namespace, binding))
                finally:
                    stop.set()
                    for task in tasks[1:]:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            operator.terminate()
            await asyncio.wait_for(operator.wait(), 15)
        text = operator_log.read_text(errors="replace")
        assert "403" not in text and "Forbidden" not in text, text[-3000:]
    finally:
        await asyncio.to_thread(
            subprocess.run, [*helm, "uninstall", release], check=False, capture_output=True, env=env
        )
