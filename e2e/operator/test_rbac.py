"""The operator runs with only its own RBAC (operator/rbac.yaml) as a ServiceAccount, like in a
cluster: a fleet still converges, scales and heals, and the API server refuses it nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.kubectl import Kubectl
from flotilla.localcluster.serviceaccount import service_account_kubeconfig
from flotilla.operator.rbac import NAME, render_rbac

pytestmark = pytest.mark.e2e


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
        proc.kubeconfig = await service_account_kubeconfig(
            api, cluster, namespace, NAME, proc.log_dir / "sa.kubeconfig"
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
