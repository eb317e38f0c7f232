"""A kubeconfig that authenticates as a ServiceAccount, by a token from the TokenRequest API.

RBAC tests must run a component with exactly the rights its pod would have: the admin's client
certificate would hide a missing rule. The context's namespace is the ServiceAccount's, as
in-cluster config takes it from the pod's.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.kubeconfig import write_kubeconfig


async def service_account_kubeconfig(
    api: Any, cluster: LocalCluster, namespace: str, service_account: str, path: Path
) -> Path:
    """Write to `path` a kubeconfig for `namespace/service_account` (token valid for an hour)."""
    from kubernetes_asyncio.client import CoreV1Api

    request: Any = {  # the client accepts the plain dict its model serializes to
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    token = await CoreV1Api(api).create_namespaced_service_account_token(service_account, namespace, request)
    ca = await asyncio.to_thread((cluster.layout.pki / "ca.crt").read_bytes)
    document = {
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
        "users": [{"name": service_account, "user": {"token": token.status.token}}],
        "contexts": [
            {"name": "c", "context": {"cluster": "c", "user": service_account, "namespace": namespace}}
        ],
        "current-context": "c",
    }
    return await asyncio.to_thread(write_kubeconfig, path, document)
