"""Fixtures for the operator's e2e tests: the CRD installed, the operator as a real process, and a
stand-in binder for fleet pods until the placement scheduler runs in these tests.

The operator runs as `flotilla operator run` in a subprocess (the same entry point as in a
cluster), watching only the test's namespace, with short timers so the tests stay fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flotilla.api import labels
from flotilla.api.crdgen import render as render_crd
from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.kubectl import Kubectl


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster, kubectl: Kubectl) -> str:
    """The InferenceFleet CRD, applied from the models and Established."""
    kubectl.apply(render_crd())
    kubectl("wait", "--for=condition=Established", f"crd/{labels.CRD_NAME}", "--timeout=60s")
    # Discovery of the new kind can lag behind Established for a moment.
    deadline = time.monotonic() + 30
    while "inferencefleets" not in kubectl("api-resources", f"--api-group={labels.GROUP}", check=False):
        if time.monotonic() > deadline:
            raise TimeoutError("InferenceFleet never appeared in discovery")
        time.sleep(0.5)
    return labels.CRD_NAME


@dataclass
class OperatorProcess:
    """`flotilla operator run` as a child process; restartable within one test."""

    kubeconfig: Path
    namespace: str
    log_dir: Path
    name: str = "op"
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            "from flotilla.cli import main; main()",
            "operator",
            "run",
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={self.namespace}",
            "--tolerate-kwok",
            "--resync=2",
            "--node-lost-grace=2",
            "--backoff-base=1",
            "--backoff-max=4",
            f"--lease-namespace={self.namespace}",
            "--lease-duration=3",
            f"--identity={self.name}-{self.starts}",
            *self.extra,
        ]

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        log = (self.log_dir / f"operator-{self.name}-{self.starts}.log").open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        logs = sorted(self.log_dir.glob(f"operator-{self.name}-*.log"))
        return "\n".join(p.read_text(errors="replace") for p in logs)


@pytest.fixture
def operator_factory(
    crd: str, cluster: LocalCluster, namespace: str, tmp_path: Path
) -> Iterator[Callable[[str], OperatorProcess]]:
    """Make (not start) operator processes for the test's namespace; all stopped afterwards."""
    made: list[OperatorProcess] = []

    def make(name: str) -> OperatorProcess:
        made.append(OperatorProcess(cluster.kubeconfig, namespace, tmp_path, name=name))
        return made[-1]

    yield make
    for proc in made:
        proc.stop()


@pytest.fixture
def operator(operator_factory: Callable[[str], OperatorProcess]) -> OperatorProcess:
    """The operator watching the test's namespace (its log is attached to a failing test's report)."""
    proc = operator_factory("op")
    proc.start()
    return proc


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        proc = funcargs.get("operator")
        if isinstance(proc, OperatorProcess):
            report.sections.append(("operator log (tail)", proc.logs()[-6000:]))
        elif "operator_factory" in funcargs:
            logs = "\n".join(
                p.read_text(errors="replace")
                for p in sorted(Path(funcargs["tmp_path"]).glob("operator-*.log"))
            )
            report.sections.append(("operator logs (tail)", logs[-6000:]))
    return report


@dataclass
class Binder:
    """Binds the namespace's unbound flotilla pods to the allowed nodes, fewest pods first.

    A stand-in for the placement scheduler: no capacity model beyond the count, which the tests'
    small fleets never exceed.
    """

    api: Any
    namespace: str
    nodes: list[str]
    bound: dict[str, str] = field(default_factory=dict)

    async def step(self) -> None:
        from kubernetes_asyncio.client import CoreV1Api

        core = CoreV1Api(self.api)
        pods = await core.list_namespaced_pod(self.namespace, field_selector="spec.nodeName=")
        for pod in pods.items:
            if pod.spec.scheduler_name != labels.SCHEDULER_NAME or pod.metadata.deletion_timestamp:
                continue
            if not self.nodes:
                return
            load = {n: 0 for n in self.nodes}
            for node in self.bound.values():
                if node in load:
                    load[node] += 1
            node = min(self.nodes, key=lambda n: (load[n], n))
            body = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": pod.metadata.name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
            with contextlib.suppress(Exception):  # the pod may be gone; the next step retries
                await core.create_namespaced_pod_binding(
                    pod.metadata.name, self.namespace, body, _preload_content=False
                )
                self.bound[pod.metadata.name] = node

    async def run(self, period_s: float = 0.2) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.step()
            await asyncio.sleep(period_s)


@pytest.fixture
async def binder(
    api: Any, namespace: str, gpu_nodes: Callable[..., Awaitable[list[str]]]
) -> AsyncIterator[Binder]:
    """A Binder over 3 fresh GPU nodes of the test's own; `binder.nodes` may be edited."""
    nodes = await gpu_nodes(3, gpus=8)
    b = Binder(api, namespace, list(nodes))
    task = asyncio.create_task(b.run())
    yield b
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def fleet_manifest(name: str, replicas: int = 3, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": labels.API_VERSION,
        "kind": labels.KIND,
        "metadata": {"name": name},
        "spec": {"model": {"name": "tiny", "source": "org/tiny"}, "replicas": replicas, **spec},
    }
    return body


@dataclass
class Fleets:
    """Fleet and fleet-pod helpers over the admin API client, in the test's namespace."""

    api: Any
    namespace: str

    @staticmethod
    def manifest(name: str, replicas: int = 3, **spec: Any) -> dict[str, Any]:
        return fleet_manifest(name, replicas, **spec)

    def _custom(self) -> Any:
        from kubernetes_asyncio.client import CustomObjectsApi

        return CustomObjectsApi(self.api)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self._custom().create_namespaced_custom_object(
            labels.GROUP, labels.VERSION, self.namespace, labels.PLURAL, body
        )
        return out

    async def get(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = await self._custom().get_namespaced_custom_object(
            labels.GROUP, labels.VERSION, self.namespace, labels.PLURAL, name
        )
        return out

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self._custom().patch_namespaced_custom_object(
            labels.GROUP,
            labels.VERSION,
            self.namespace,
            labels.PLURAL,
            name,
            {"spec": spec},
            _content_type="application/merge-patch+json",
        )
        return out

    async def delete(self, name: str) -> None:
        await self._custom().delete_namespaced_custom_object(
            labels.GROUP, labels.VERSION, self.namespace, labels.PLURAL, name
        )

    async def pods(self, name: str, *, include_deleting: bool = False) -> list[Any]:
        from kubernetes_asyncio.client import CoreV1Api

        pods = await CoreV1Api(self.api).list_namespaced_pod(
            self.namespace, label_selector=f"{labels.LABEL_FLEET}={name}"
        )
        return [p for p in pods.items if include_deleting or not p.metadata.deletion_timestamp]

    async def wait_ready(self, name: str, replicas: int, *, timeout_s: float = 60.0) -> list[Any]:
        """Wait for `replicas` bound, Running, ready pods of the current revision and Ready status."""
        from flotilla.localcluster.readiness import wait_until

        result: list[Any] = []

        async def check() -> bool:
            fleet = await self.get(name)
            status = fleet.get("status") or {}
            conds = {c["type"]: c for c in status.get("conditions", [])}
            pods = await self.pods(name)
            revision = status.get("currentRevision")
            good = [
                p
                for p in pods
                if p.spec.node_name
                and p.status.phase == "Running"
                and (p.metadata.labels or {}).get(labels.LABEL_REVISION) == revision
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            ]
            result[:] = good
            return (
                len(pods) == replicas
                and len(good) == replicas
                and conds.get("Ready", {}).get("status") == "True"
                and status.get("readyReplicas") == replicas
                and status.get("observedGeneration") == fleet["metadata"]["generation"]
            )

        await wait_until(check, timeout_s=timeout_s, what=f"fleet {name} with {replicas} ready pods")
        return result


@pytest.fixture
def fleets(api: Any, namespace: str) -> Fleets:
    return Fleets(api, namespace)
