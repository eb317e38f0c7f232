"""The system under fault, in one namespace of a local cluster: nodes, a binder, the operator, one
engine per pod, router replicas and one sliced fleet.

Everything runs the way it runs in a cluster, as separate processes: `flotilla operator run`
(namespace-scoped, leader election on) and `flotilla router run` (Kubernetes discovery) with the
cluster's kubeconfig; one `flotilla.enginesim` process per fleet pod on the pod's IP
(`PodEngineWatcher` plays the kubelet's runtime, `_supervise_engines` its restart policy,
`_supervise_operator` the operator's Deployment). Pods are bound by `binder.py` over the rig's own
nodes, standing in for the placement scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flotilla.api import labels
from flotilla.api.crdgen import render as render_crd
from flotilla.chaos.binder import bind_forever
from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.demo_steps import flotilla_argv
from flotilla.localcluster.engines import EngineCommand, EngineLauncher
from flotilla.localcluster.kubectl import Kubectl
from flotilla.localcluster.nodes import GpuNodeSpec
from flotilla.localcluster.podwatch import PodEngineWatcher
from flotilla.localcluster.ports import free_port
from flotilla.localcluster.process import ManagedProcess
from flotilla.localcluster.readiness import wait_http_ok, wait_until

CHAOS_LABEL = "flotilla.dev/chaos-rig"


@dataclass(frozen=True)
class RigSpec:
    replicas: int = 3
    routers: int = 2
    nodes: int = 3
    slice_tokens: int = 32
    model: str = "chaos-model"
    fleet: str = "chaos"
    engine_restart_delay_s: float = 1.0
    """How long the stand-in kubelet waits before restarting a dead engine (CrashLoop's first step)."""
    router_drain_s: float = 30.0
    operator_restart_delay_s: float = 1.0
    operator_args: tuple[str, ...] = ()
    """Extra `flotilla operator run` flags (e.g. --log-level=DEBUG)."""
    policy: str = "least_request"
    engine: EngineCommand | None = None
    """What serves each pod (None: flotilla.enginesim; `flotilla.vllmcpu.command.VllmCommand`: real vLLM)."""
    router_scrape_interval_s: float = 0.25


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class RouterReplica:
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Rig:
    """Build with `Rig(cluster, namespace, spec)`, then `await rig.start()`; `await rig.stop()`."""

    cluster: LocalCluster
    namespace: str
    spec: RigSpec = field(default_factory=RigSpec)
    log_dir: Path | None = None
    api: Any = None
    launcher: EngineLauncher | None = None
    watcher: PodEngineWatcher | None = None
    operator: ManagedProcess | None = None
    routers: list[RouterReplica] = field(default_factory=list)
    node_names: list[str] = field(default_factory=list)
    operator_starts: int = 0
    engine_restarts: int = 0
    installed_crd: bool = False
    operator_exits: int = 0
    """Times the operator process ended (killed, or on its own after losing its Lease) and was restarted."""
    no_restart: set[str] = field(default_factory=set)
    """Pod keys whose engine must stay dead (their machine is gone)."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    # --- life cycle -------------------------------------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.log_dir or self.cluster.run_dir / "logs" / f"chaos-{self.namespace}"

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl(self.cluster.binaries.kubectl, self.cluster.kubeconfig, namespace=self.namespace)

    async def start(self, *, timeout_s: float = 120.0) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.api = await self.cluster.api_client()
        # A CRD this rig installs goes again at stop: later tests on a shared cluster (the Helm
        # chart's) expect to find the cluster as it was.
        crd = f"crd/{labels.CRD_NAME}"
        self.installed_crd = not (
            await self.kubectl.run("get", crd, "--ignore-not-found", "-o", "name")
        ).strip()
        await self.kubectl.run("apply", "--server-side", "-f", "-", input=render_crd())
        await self.kubectl.run(
            "wait", "--for=condition=Established", f"crd/{labels.CRD_NAME}", "--timeout=60s"
        )
        specs = [
            GpuNodeSpec(name=f"chaos-{self._tag}-{i}", gpus=8, labels={CHAOS_LABEL: self._tag})
            for i in range(self.spec.nodes)
        ]
        self.node_names = await self.cluster.add_gpu_nodes(specs)
        binder = bind_forever(self.api, self.namespace, f"{CHAOS_LABEL}={self._tag}")
        self._tasks.append(asyncio.create_task(binder, name="chaos-binder"))
        self.launcher = EngineLauncher(self.logs / "engines", self.spec.engine)
        self.watcher = PodEngineWatcher(
            self.api,
            self.launcher,
            label_selector=f"{labels.LABEL_MANAGED_BY}={labels.MANAGED_BY}",
            namespace=self.namespace,
        )
        await self.watcher.__aenter__()
        self._tasks.append(asyncio.create_task(self._supervise_engines(), name="chaos-kubelet"))
        await self.start_operator()
        self._tasks.append(asyncio.create_task(self._supervise_operator(), name="chaos-deployment"))
        for _ in range(self.spec.routers):
            self.routers.append(await self._start_router(free_port()))
        await self._create_fleet()
        await self.wait_serving(timeout_s=timeout_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for router in self.routers:
            await router.process.stop(5.0)
        if self.operator is not None:
            await self.operator.stop(5.0)
        if self.watcher is not None:
            await self.watcher.close()
        if self.launcher is not None:
            await self.launcher.stop_all()
        if self.api is not None:
            from kubernetes_asyncio.client import CoreV1Api

            core = CoreV1Api(self.api)
            for name in self.node_names:
                with contextlib.suppress(Exception):
                    await core.delete_node(name)
            await self.api.close()
        if self.installed_crd:
            await self.kubectl.run(
                "delete", f"crd/{labels.CRD_NAME}", "--wait=true", "--timeout=60s", check=False
            )

    # --- components -------------------------------------------------------------------------------
    async def start_operator(self) -> None:
        self.operator_starts += 1
        argv = flotilla_argv(
            "operator", "run", f"--kubeconfig={self.cluster.kubeconfig}", f"--namespace={self.namespace}",
            "--tolerate-kwok", "--resync=2", "--node-lost-grace=2", "--backoff-base=1", "--backoff-max=4",
            f"--lease-namespace={self.namespace}", "--lease-duration=3",
            f"--identity=chaos-op-{self.operator_starts}", *self.spec.operator_args,
        )  # fmt: skip
        self.operator = ManagedProcess(
            name="operator", argv=argv, log_path=self.logs / f"operator-{self.operator_starts}.log"
        )
        self.operator.start()

    async def _start_router(self, port: int) -> RouterReplica:
        config = {
            "host": "127.0.0.1",
            "port": port,
            "auth": {"mode": "none"},  # loopback only
            "drain_timeout_s": self.spec.router_drain_s,
            "scrape_interval_s": self.spec.router_scrape_interval_s,
            "kubernetes": {"kubeconfig": str(self.cluster.kubeconfig), "namespace": self.namespace},
        }
        path = self.logs / f"router-{port}.yaml"
        await asyncio.to_thread(path.write_text, yaml.safe_dump(config))
        process = ManagedProcess(
            name=f"router-{port}",
            argv=flotilla_argv("router", "run", f"--config={path}", "--log-level=warning"),
            log_path=self.logs / f"router-{port}.log",
        )
        process.start()
        replica = RouterReplica(port, process)
        async with httpx.AsyncClient(trust_env=False) as client:
            await wait_http_ok(client, replica.url + "/health", timeout_s=60, process=process)
        return replica

    async def restart_router(self, index: int, *, down_s: float = 0.0) -> float:
        """SIGTERM replica `index` (uvicorn drains in-flight requests), start it again on the same
        port; returns how long the drain took."""
        replica = self.routers[index]
        started = time.monotonic()
        await replica.process.stop(self.spec.router_drain_s + 5)
        drained = time.monotonic() - started
        await asyncio.sleep(down_s)
        self.routers[index] = await self._start_router(replica.port)
        return drained

    async def _create_fleet(self) -> None:
        from kubernetes_asyncio.client import CustomObjectsApi

        body = {
            "apiVersion": labels.API_VERSION,
            "kind": labels.KIND,
            "metadata": {"name": self.spec.fleet},
            "spec": {
                "model": {"name": self.spec.model, "source": "org/chaos"},
                "replicas": self.spec.replicas,
                "router": {"policy": self.spec.policy, "sliceTokens": self.spec.slice_tokens},
                "rollout": {"maxSurge": 1, "maxUnavailable": 0},
            },
        }
        await CustomObjectsApi(self.api).create_namespaced_custom_object(
            labels.GROUP, labels.VERSION, self.namespace, labels.PLURAL, body
        )

    async def patch_fleet(self, spec: dict[str, Any]) -> None:
        from kubernetes_asyncio.client import CustomObjectsApi

        custom: Any = CustomObjectsApi(self.api)
        await custom.patch_namespaced_custom_object(
            labels.GROUP, labels.VERSION, self.namespace, labels.PLURAL, self.spec.fleet, {"spec": spec},
            _content_type="application/merge-patch+json",
        )  # fmt: skip

    # --- observation ------------------------------------------------------------------------------
    async def fleet(self) -> dict[str, Any]:
        return json.loads(await self.kubectl.run("get", "inferencefleet", self.spec.fleet, "-o", "json"))  # type: ignore[no-any-return]

    async def pods(self) -> list[dict[str, Any]]:
        from kubernetes_asyncio.client import CoreV1Api

        core: Any = CoreV1Api(self.api)
        response = await core.list_namespaced_pod(
            self.namespace, label_selector=f"{labels.LABEL_FLEET}={self.spec.fleet}", _preload_content=False
        )
        items: list[dict[str, Any]] = json.loads(await response.read())["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    async def routable(self, router: RouterReplica) -> int:
        async with httpx.AsyncClient(trust_env=False) as client:
            text = (await client.get(router.url + "/metrics", timeout=2.0)).text
        return int(
            sum(
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "flotilla_router_routable_instances" and s.labels.get("model") == self.spec.model
            )
        )

    async def router_counter(
        self, name: str, *, routers: Iterable[RouterReplica] | None = None, **match: str
    ) -> float:
        """A router metric summed over the replicas (samples whose labels include `match`)."""
        total = 0.0
        async with httpx.AsyncClient(trust_env=False) as client:
            for router in self.routers if routers is None else routers:
                with contextlib.suppress(httpx.HTTPError):
                    text = (await client.get(router.url + "/metrics", timeout=2.0)).text
                    total += sum(
                        s.value
                        for family in text_string_to_metric_families(text)
                        for s in family.samples
                        if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
                    )
        return total

    async def serving(self, replicas: int | None = None) -> bool:
        """Full strength: the fleet Ready at the wanted size on its current revision, an engine
        answering on every pod, and every router replica routing to all of them."""
        want = replicas if replicas is not None else self.spec.replicas
        fleet = await self.fleet()
        status = fleet.get("status") or {}
        if status.get("observedGeneration") != fleet["metadata"]["generation"]:
            return False
        if (status.get("readyReplicas") or 0) < want:
            return False
        pods = await self.pods()
        revision = status.get("currentRevision")
        current = [p for p in pods if p["metadata"]["labels"].get(labels.LABEL_REVISION) == revision]
        if len(pods) != want or len(current) != want or not all(_pod_ready(p) for p in pods):
            return False
        assert self.launcher is not None
        ready = {key.split("/")[1] for key in self.launcher.ready_keys()}
        if not all(p["metadata"]["name"] in ready for p in pods):
            return False
        for router in self.routers:
            if not router.process.running() or await self.routable(router) != want:
                return False
        return True

    async def wait_serving(self, replicas: int | None = None, *, timeout_s: float = 120.0) -> float:
        """Wait for `serving`; returns the seconds it took."""
        started = time.monotonic()
        await wait_until(
            lambda: self.serving(replicas),
            timeout_s=timeout_s,
            what=f"fleet {self.spec.fleet} serving at full strength",
            interval_s=0.25,
        )
        return time.monotonic() - started

    # --- the stand-ins for the kubelet and the operator's Deployment -------------------------------
    async def _supervise_engines(self) -> None:
        """Restart an engine whose process died while its pod lives (restartPolicy: Always)."""
        assert self.launcher is not None
        dead_since: dict[str, float] = {}
        while True:
            await asyncio.sleep(0.2)
            for key, engine in list(self.launcher.engines.items()):
                if engine.process.running() or key in self.no_restart:
                    dead_since.pop(key, None)
                    continue
                first = dead_since.setdefault(key, time.monotonic())
                if time.monotonic() - first < self.spec.engine_restart_delay_s:
                    continue
                dead_since.pop(key, None)
                with contextlib.suppress(Exception):
                    await self.launcher.start(engine.endpoint)
                    self.engine_restarts += 1

    async def _supervise_operator(self) -> None:
        """Start the operator again when its process ends, after `operator_restart_delay_s`, as its
        Deployment would: the operator exits on purpose when it cannot renew its leader Lease."""
        while True:
            await asyncio.sleep(0.2)
            if self.operator is not None and not self.operator.running():
                self.operator_exits += 1
                await asyncio.sleep(self.spec.operator_restart_delay_s)
                await self.start_operator()

    def engine_key(self, pod_name: str) -> str:
        assert self.launcher is not None
        for key in self.launcher.engines:
            if key.split("/")[1] == pod_name:
                return key
        raise KeyError(pod_name)

    def engine_of(self, pod_name: str) -> ManagedProcess:
        assert self.launcher is not None
        return self.launcher.engines[self.engine_key(pod_name)].process

    async def engine_running_requests(self) -> dict[str, float]:
        """Pod name -> requests its engine is generating now (vllm:num_requests_running)."""
        assert self.launcher is not None
        out: dict[str, float] = {}
        async with httpx.AsyncClient(trust_env=False) as client:
            for key, engine in list(self.launcher.engines.items()):
                with contextlib.suppress(httpx.HTTPError):
                    text = (await client.get(engine.endpoint.url + "/metrics", timeout=2.0)).text
                    out[key.split("/")[1]] = sum(
                        s.value
                        for family in text_string_to_metric_families(text)
                        for s in family.samples
                        if s.name == "vllm:num_requests_running"
                    )
        return out

    async def engine_finished(self, pod_name: str) -> float:
        """Requests the pod's engine has finished (vllm:request_success_total)."""
        assert self.launcher is not None
        url = self.launcher.engines[self.engine_key(pod_name)].endpoint.url
        async with httpx.AsyncClient(trust_env=False) as client:
            text = (await client.get(url + "/metrics", timeout=2.0)).text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "vllm:request_success_total"
        )

    async def add_node(self) -> str:
        """One more node of the rig's own (to replace a deleted one)."""
        name = f"chaos-{self._tag}-{uuid.uuid4().hex[:4]}"
        spec = GpuNodeSpec(name=name, gpus=8, labels={CHAOS_LABEL: self._tag})
        self.node_names += await self.cluster.add_gpu_nodes([spec])
        return name
