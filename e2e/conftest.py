"""Fixtures for end-to-end tests against a real local control plane (flotilla.localcluster).

One cluster per test session: etcd, kube-apiserver (client certificates + RBAC),
kube-controller-manager (garbage collector, node lifecycle, service accounts, ...) and KWOK with
4 fake GPU nodes `gpu-node-0..3` (8 x NVIDIA-H100-80GB-HBM3 each, zones zone-a/zone-b, tainted
`kwok.x-k8s.io/node=fake:NoSchedule`). kube-scheduler runs only while a test asks for it.

Fixtures (mark your module `pytestmark = pytest.mark.e2e`):
- `cluster`: the session's `LocalCluster` (`.kubeconfig`, `.server`, `.api_client()`,
  `.add_gpu_nodes(...)`, `.binaries`, `.run_dir`).
- `api`: a kubernetes_asyncio `ApiClient` (admin) for the test, closed afterwards.
- `namespace`: a fresh namespace for the test (its `default` ServiceAccount exists), deleted after.
- `kubectl`: a cluster-wide `Kubectl`; `kubectl.in_namespace(namespace)` for namespaced work.
- `kube_scheduler` / `no_kube_scheduler`: make sure kube-scheduler runs / does not run.
- `gpu_nodes`: a factory `await gpu_nodes(count, **GpuNodeSpec fields)` for extra nodes with unique
  names, deleted after the test. Placement tests that must own every node in play should select
  their nodes by a label they pass in `labels=`.
- `engine_launcher`: an `EngineLauncher` whose engines are stopped after the test; pair it with
  `PodEngineWatcher(api, engine_launcher, label_selector=..., namespace=namespace)`.

Binaries: with CI=true missing binaries are built (e2e/controlplane/build.sh) and a cluster that
does not start fails the tests. Elsewhere, missing binaries skip the e2e tests: run `make binaries`.
The cluster's run dir (logs/, kubeconfig, pki/) is kept when a test failed and printed at the end.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from flotilla.localcluster.binaries import BinariesMissing, ensure_binaries
from flotilla.localcluster.controlplane import ClusterConfig, LocalCluster
from flotilla.localcluster.engines import EngineLauncher
from flotilla.localcluster.kubectl import Kubectl
from flotilla.localcluster.nodeops import wait_default_service_account
from flotilla.localcluster.nodes import GpuNodeSpec
from flotilla.testing import in_ci

FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.failed:
        item.session.stash[FAILED] = True
    return report


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """The session's local control plane with 4 fake 8-GPU nodes (kube-scheduler off)."""
    try:
        binaries = ensure_binaries(build=in_ci())
    except BinariesMissing as exc:
        if in_ci():
            raise
        pytest.skip(f"e2e needs the control-plane binaries: {exc}")
    run_dir = tmp_path_factory.mktemp("localcluster")
    local = LocalCluster(ClusterConfig(name="flotilla-e2e", scheduler=False), run_dir, binaries)
    try:
        asyncio.run(local.start())
    except BaseException:
        request.session.stash[FAILED] = True
        print(f"\nlocal cluster failed to start; logs kept in {run_dir / 'logs'}")
        raise
    yield local
    crashed = local.failed_components()
    asyncio.run(local.stop())
    if crashed or request.session.stash.get(FAILED, False):
        print(f"\nlocal cluster logs kept in {run_dir / 'logs'} (crashed: {crashed or 'none'})")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    assert not crashed, f"control-plane components exited during the tests: {crashed}"


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    return Kubectl(cluster.binaries.kubectl, cluster.kubeconfig)


@pytest.fixture
def kube_scheduler(cluster: LocalCluster) -> LocalCluster:
    """Ensure kube-scheduler runs (it keeps running after the test; it only binds pods that name
    the default scheduler, never flotilla's)."""
    asyncio.run(cluster.start_scheduler())
    return cluster


@pytest.fixture
def no_kube_scheduler(cluster: LocalCluster) -> LocalCluster:
    """Ensure kube-scheduler does not run during the test."""
    asyncio.run(cluster.stop_scheduler())
    return cluster


@pytest.fixture
async def api(cluster: LocalCluster) -> AsyncIterator[Any]:
    async with await cluster.api_client() as client:
        yield client


def _namespace_name(request: pytest.FixtureRequest) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")
    return f"{base[:40].rstrip('-')}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def namespace(cluster: LocalCluster, api: Any, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A new namespace named after the test, ready for pods; deleted (not awaited) afterwards."""
    from kubernetes_asyncio.client import CoreV1Api

    core = CoreV1Api(api)
    name = _namespace_name(request)
    await core.create_namespace(body={"metadata": {"name": name, "labels": {"flotilla.dev/e2e": "true"}}})
    await wait_default_service_account(api, name, timeout_s=30)
    yield name
    await core.delete_namespace(name)


@pytest.fixture
async def gpu_nodes(cluster: LocalCluster, api: Any) -> AsyncIterator[Callable[..., Awaitable[list[str]]]]:
    """Factory: `await gpu_nodes(2, gpus=4, zone="zone-c", labels={...})` -> Ready node names."""
    from kubernetes_asyncio.client import CoreV1Api
    from kubernetes_asyncio.client.exceptions import ApiException

    created: list[str] = []

    async def make(count: int, **fields: Any) -> list[str]:
        tag = uuid.uuid4().hex[:6]
        specs = [GpuNodeSpec(name=f"gpu-{tag}-{i}", **fields) for i in range(count)]
        names = await cluster.add_gpu_nodes(specs)
        created.extend(names)
        return names

    yield make
    core = CoreV1Api(api)
    for name in created:
        try:
            await core.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:  # a test may delete its node itself (a node failure)
                raise


@pytest.fixture
async def engine_launcher(cluster: LocalCluster) -> AsyncIterator[EngineLauncher]:
    """Starts engines (flotilla.enginesim by default) bound to pod IPs; all stopped afterwards."""
    launcher = EngineLauncher(cluster.run_dir / "logs" / "engines")
    async with launcher:
        yield launcher
