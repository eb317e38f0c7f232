"""The operator runs with only its own RBAC (operator/rbac.yaml) as a ServiceAccount, like in a
cluster: a fleet still converges, scales and heals, and the API server refuses it nothing."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.kubectl import Kubectl
from flotilla.operator.rbac import NAME, render_rbac

pytestmark = pytest.mark.e2e


async def _service_account_kubeconfig(api: Any, cluster: LocalCluster, namespace: str, path: Path) -> Path:
    from kubernetes_asyncio.client import CoreV1Api

    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    token = await CoreV1Api(api).create_namespaced_service_account_token(NAME, namespace, request)
    ca = await asyncio.to_thread((cluster.layout.pki / "ca.crt").read_bytes)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
        ],
        "users": [{"name": "sa", "user": {"token": token.status.token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
        "current-context": "c",
    }
    await asyncio.to_thread(path.write_text, yaml.safe_dump(config))
    return path


async def test_operator_needs_no_more_than_its_rbac(  # noqa: PLR0917
    operator_factory: Callable[[str], Any],
    binder: Any,
    fleets: Any,
    api: Any,
    cluster: LocalCluster,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    kubectl.apply(render_rbac(namespace))
    try:
        proc = operator_factory("restricted")
        proc.kubeconfig = await _service_account_kubeconfig(
            api, cluster, namespace, proc.log_dir / "sa.kubeconfig"
        )
        proc.start()
        await fleets.create(fleets.manifest("least", 2))
        await fleets.wait_ready("least", 2)
        await fleets.patch_spec("least", {"replicas": 3})
        pods = await fleets.wait_ready("least", 3)
        kubectl.in_namespace(namespace)("delete", "pod", pods[0].metadata.name, "--wait=false")
        await fleets.wait_ready("least", 3)
        logs = proc.logs()
        assert "Forbidden" not in logs and "403" not in logs, logs[-3000:]
        assert proc.alive()
    finally:
        kubectl("delete", "clusterrolebinding", NAME, "--ignore-not-found")
