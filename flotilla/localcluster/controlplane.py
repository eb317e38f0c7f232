"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK.

`LocalCluster` starts real Kubernetes binaries (built by e2e/controlplane/build.sh) on free
loopback ports, with client-certificate authentication and RBAC, and KWOK playing the kubelet of
fake GPU nodes. It is async (readiness waits never block a loop) but keeps no loop-bound state, so
a sync caller can `asyncio.run(cluster.start())` and later `asyncio.run(cluster.stop())`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import ssl
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field

from flotilla.localcluster import components, pki
from flotilla.localcluster.binaries import Binaries
from flotilla.localcluster.kubeconfig import render_kubeconfig, write_kubeconfig
from flotilla.localcluster.nodeops import create_gpu_nodes, wait_default_service_account, wait_nodes_ready
from flotilla.localcluster.nodes import (
    CLUSTER_BLOCK,
    H100,
    NODE_SUBNETS,
    GpuNodeSpec,
    default_gpu_nodes,
)
from flotilla.localcluster.ports import free_ports
from flotilla.localcluster.process import ManagedProcess, ProcessFailed
from flotilla.localcluster.readiness import wait_http_ok, wait_until

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient


class ClusterConfig(BaseModel):
    """What to start. Defaults give the demo's cluster: 4 nodes x 8 H100 in two zones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "flotilla-local"
    gpu_nodes: int = Field(default=4, ge=0)
    gpus_per_node: int = Field(default=8, ge=0)
    gpu_product: str = H100
    zones: tuple[str, ...] = ("zone-a", "zone-b")
    scheduler: bool = True
    # How long a node may stay silent before the node lifecycle controller marks it NotReady.
    node_monitor_grace_period_s: int = Field(default=40, ge=5)
    node_lease_duration_s: int = Field(default=40, ge=5)
    start_timeout_s: float = Field(default=90.0, gt=0)
    # Which block of CLUSTER_BLOCK node subnets of 127.128.0.0/9 this cluster's nodes take; None
    # picks one at random, so clusters started at the same time rarely share pod IPs.
    pod_subnet_block: int | None = Field(default=None, ge=0, lt=NODE_SUBNETS // CLUSTER_BLOCK)
    # Whether the processes outlive this Python process (`flotilla cluster up`); otherwise they
    # are killed when it dies, however it dies.
    detached: bool = False


PORT_ATTEMPTS = 3

IDENTITIES = {
    "admin": pki.ADMIN,
    "controller-manager": pki.CONTROLLER_MANAGER,
    "scheduler": pki.SCHEDULER,
    "kwok": pki.KWOK,
}


class LocalCluster:
    """One running control plane. Use `start`/`stop`, or `async with LocalCluster(...)`.

    Attributes useful to tests: `kubeconfig` (admin kubeconfig path), `server` (API URL),
    `run_dir` (logs under `logs/`), `binaries` (kubectl, helm, ...).
    """

    def __init__(self, config: ClusterConfig, run_dir: Path, binaries: Binaries) -> None:
        self.config = config
        self.run_dir = run_dir
        self.binaries = binaries
        ports = components.Ports(*free_ports(len(fields(components.Ports))))
        self.layout = components.Layout(run_dir=run_dir, ports=ports, binaries=binaries)
        self.processes: dict[str, ManagedProcess] = {}
        block = config.pod_subnet_block
        if block is None:
            block = random.SystemRandom().randrange(NODE_SUBNETS // CLUSTER_BLOCK)
        self.first_node_subnet = block * CLUSTER_BLOCK

    # --- addresses -------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user kubernetes-admin, group system:masters)."""
        return self.layout.admin_kubeconfig

    @property
    def server(self) -> str:
        return self.layout.server

    def admin_ssl_context(self) -> ssl.SSLContext:
        """TLS context that trusts the cluster CA and presents the admin client certificate."""
        context = ssl.create_default_context(cafile=str(self.layout.pki / "ca.crt"))
        context.load_cert_chain(self.layout.pki / "admin.crt", self.layout.pki / "admin.key")
        return context

    async def api_client(self) -> ApiClient:
        """A new kubernetes_asyncio ApiClient as admin; close it (`async with`) when done."""
        from kubernetes_asyncio import config

        client: ApiClient = await config.new_client_from_config(config_file=str(self.kubeconfig))
        return client

    # --- life cycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every component and the configured GPU nodes; on failure stop what started.

        Ports are picked free but only bound later by the components, so a busy machine may hand
        one to someone else in between: such a start is retried from scratch on new ports.
        """
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                await self._start()
                return
            except ProcessFailed as exc:
                await self.stop()
                if "address already in use" not in str(exc) or attempt == PORT_ATTEMPTS:
                    raise
                await asyncio.to_thread(shutil.rmtree, self.run_dir, True)
                self.processes.clear()
                ports = components.Ports(*free_ports(len(fields(components.Ports))))
                self.layout = components.Layout(run_dir=self.run_dir, ports=ports, binaries=self.binaries)
            except BaseException:
                await self.stop()
                raise

    async def _start(self) -> None:
        timeout = self.config.start_timeout_s
        self.run_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._write_credentials)
        async with httpx.AsyncClient(verify=False, trust_env=False) as insecure:  # self-signed
            etcd = self._spawn("etcd", components.etcd_argv(self.layout))
            await wait_until(
                lambda: self._etcd_healthy(insecure), timeout_s=timeout, what="etcd /health", process=etcd
            )
            apiserver = self._spawn("kube-apiserver", components.apiserver_argv(self.layout))
            async with httpx.AsyncClient(verify=self.admin_ssl_context(), trust_env=False) as admin:
                await wait_http_ok(admin, f"{self.server}/readyz", timeout_s=timeout, process=apiserver)
            kcm = self._spawn(
                "kube-controller-manager",
                components.controller_manager_argv(self.layout, self.config.node_monitor_grace_period_s),
            )
            kcm_url = f"https://{components.HOST}:{self.layout.ports.controller_manager}/healthz"
            await wait_http_ok(insecure, kcm_url, timeout_s=timeout, process=kcm)
            if self.config.scheduler:
                await self.start_scheduler()
            kwok_config = self.run_dir / "kwok.yaml"
            kwok_config.write_text(
                yaml.safe_dump_all(components.kwok_config(self.config.node_lease_duration_s), sort_keys=False)
            )
            kwok = self._spawn("kwok", components.kwok_argv(self.layout, kwok_config))
            kwok_url = f"http://{components.HOST}:{self.layout.ports.kwok}/healthz"
            await wait_http_ok(insecure, kwok_url, timeout_s=timeout, process=kwok)
        async with await self.api_client() as api:
            await wait_default_service_account(api, "default", timeout_s=timeout, process=kcm)
        nodes = default_gpu_nodes(
            self.config.gpu_nodes,
            gpus=self.config.gpus_per_node,
            gpu_product=self.config.gpu_product,
            zones=self.config.zones,
        )
        await self.add_gpu_nodes(nodes)
        self._write_state()

    async def start_scheduler(self) -> None:
        """Start kube-scheduler (the default scheduler) if it is not running; idempotent."""
        existing = self.processes.get("kube-scheduler")
        if existing is not None and existing.running():
            return
        scheduler = self._spawn("kube-scheduler", components.scheduler_argv(self.layout))
        url = f"https://{components.HOST}:{self.layout.ports.scheduler}/healthz"
        async with httpx.AsyncClient(verify=False, trust_env=False) as insecure:
            await wait_http_ok(insecure, url, timeout_s=self.config.start_timeout_s, process=scheduler)
        self._write_state()

    async def stop_scheduler(self) -> None:
        """Stop kube-scheduler, e.g. to prove that only flotilla's scheduler binds some pods."""
        if scheduler := self.processes.pop("kube-scheduler", None):
            await scheduler.stop()
            self._write_state()

    async def restart_apiserver(self, *, down_s: float = 0.0) -> float:
        """Stop kube-apiserver, wait `down_s`, start it again on the same port with the same
        certificates and etcd (what clients see of an API server crash or upgrade: every watch
        breaks, every client must reconnect and relist). Returns the seconds it was unreachable
        (from the stop to /readyz answering again)."""
        await self.processes["kube-apiserver"].stop()
        stopped = time.monotonic()
        await asyncio.sleep(down_s)
        apiserver = self._spawn("kube-apiserver", components.apiserver_argv(self.layout))
        async with httpx.AsyncClient(verify=self.admin_ssl_context(), trust_env=False) as admin:
            await wait_http_ok(
                admin, f"{self.server}/readyz", timeout_s=self.config.start_timeout_s, process=apiserver
            )
        self._write_state()
        return time.monotonic() - stopped

    async def stop(self, *, remove_run_dir: bool = False) -> None:
        """Stop every component (last started first); keep the run dir unless asked to remove it."""
        for name in reversed(list(self.processes)):
            await self.processes[name].stop()
        if remove_run_dir:
            await asyncio.to_thread(shutil.rmtree, self.run_dir, True)

    def failed_components(self) -> list[str]:
        """Components that have exited although the cluster was not stopped."""
        return [name for name, p in self.processes.items() if not p.running()]

    # --- nodes -----------------------------------------------------------------------------------
    async def add_gpu_nodes(self, specs: Sequence[GpuNodeSpec], *, timeout_s: float = 60.0) -> list[str]:
        """Create fake GPU nodes (each with its own 127.x pod CIDR) and wait until they are Ready."""
        if not specs:
            return []
        async with await self.api_client() as api:
            names = await create_gpu_nodes(api, specs, first_index=self.first_node_subnet)
            await wait_nodes_ready(api, names, timeout_s=timeout_s, process=self.processes.get("kwok"))
        return names

    # --- internals -------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(
            name=name,
            argv=argv,
            log_path=self.layout.logs / f"{name}.log",
            die_with_parent=not self.config.detached,
        )
        process.start()
        self.processes[name] = process
        return process

    async def _etcd_healthy(self, client: httpx.AsyncClient) -> bool:
        response = await client.get(f"{self.layout.etcd_url}/health", timeout=2.0)
        return response.status_code == 200 and json.loads(response.text).get("health") == "true"

    def _write_credentials(self) -> None:
        authority = pki.ClusterPKI(self.layout.pki)
        authority.serving("apiserver", [components.HOST, "localhost", "kubernetes", "10.96.0.1"])
        authority.service_account_keys()
        front_proxy = pki.ClusterPKI(self.layout.pki, ca_stem="front-proxy-ca", ca_name="front-proxy-ca")
        front_proxy.client(pki.FRONT_PROXY_CLIENT)
        (self.run_dir / "kubeconfigs").mkdir(parents=True, exist_ok=True)
        for component, identity in IDENTITIES.items():
            pair = authority.client(identity)
            path = (
                self.layout.admin_kubeconfig
                if component == "admin"
                else self.layout.component_kubeconfig(component)
            )
            document = render_kubeconfig(
                cluster_name=self.config.name,
                server=self.server,
                ca_file=authority.ca.cert,
                user=identity.user,
                client=pair,
            )
            write_kubeconfig(path, document)

    def state(self) -> dict[str, Any]:
        """What `flotilla cluster down/status` need from another process: pids and addresses."""
        return {
            "name": self.config.name,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "run_dir": str(self.run_dir),
            "processes": {
                name: {"pid": p.pid, "start_time": p.start_time, "log": str(p.log_path)}
                for name, p in self.processes.items()
                if p.popen is not None
            },
        }

    def _write_state(self) -> None:
        with contextlib.suppress(OSError):
            (self.run_dir / "state.json").write_text(json.dumps(self.state(), indent=2))
