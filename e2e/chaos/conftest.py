"""The chaos rig shared by the fault tests of this folder: one namespace, the operator, two router
replicas, an engine per pod and a 3-replica sliced fleet, built once (about 20 s) and put back to
full strength by each test before its fault (`Rig.wait_serving`). The API server test restarts the
session cluster's kube-apiserver (same port, same etcd); the CRD, if the rig installed it, is removed
again at the end."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from flotilla.chaos.rig import Rig, RigSpec
from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.nodeops import wait_default_service_account


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rig(cluster: LocalCluster) -> AsyncIterator[Rig]:
    from kubernetes_asyncio.client import CoreV1Api

    namespace = f"chaos-{uuid.uuid4().hex[:6]}"
    async with await cluster.api_client() as api:
        await CoreV1Api(api).create_namespace(
            body={"metadata": {"name": namespace, "labels": {"flotilla.dev/e2e": "true"}}}
        )
        await wait_default_service_account(api, namespace, timeout_s=30)
    built = Rig(cluster, namespace, RigSpec(replicas=3, routers=2, slice_tokens=32))
    try:
        await built.start()
        yield built
    finally:
        await built.stop()
        async with await cluster.api_client() as api:
            await CoreV1Api(api).delete_namespace(namespace)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        built = getattr(item, "funcargs", {}).get("rig")
        if isinstance(built, Rig):
            report.sections.append(("chaos rig logs", str(built.logs)))
    return report
