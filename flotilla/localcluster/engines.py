"""Engine processes for pods: one process per pod, bound to the pod's own IP and port.

This is the local stand-in for a kubelet's container runtime. The command is pluggable
(`EngineCommand`): `EngineSimCommand` runs flotilla's simulated vLLM-compatible engine (fast, for
scale), `flotilla.vllmcpu.command.VllmCommand` real vLLM on the CPU with a tiny local model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import httpx

from flotilla.localcluster.podendpoint import PodEndpoint
from flotilla.localcluster.ports import free_port
from flotilla.localcluster.process import ManagedProcess
from flotilla.localcluster.readiness import wait_http_ok

log = logging.getLogger(__name__)


class EngineKind(StrEnum):
    """What serves a pod: flotilla's simulated engine, or real vLLM (CPU) with a local model."""

    enginesim = "enginesim"
    vllm = "vllm"


@dataclass(frozen=True)
class EngineLaunch:
    """How to start one engine process: its argv and, if not inherited, its environment."""

    argv: list[str]
    env: Mapping[str, str] | None = None


class EngineCommand(Protocol):
    """Builds the process that serves `endpoint.model` on `endpoint.ip:endpoint.port`.

    `ready_timeout_s` is how long the engine may take to answer its health check after start."""

    @property
    def ready_timeout_s(self) -> float: ...

    def __call__(self, endpoint: PodEndpoint) -> EngineLaunch: ...


@dataclass(frozen=True)
class EngineSimCommand:
    """`python -m flotilla.enginesim --host IP --port PORT --model NAME [extra args]`."""

    extra_args: Sequence[str] = ()
    python: str = sys.executable
    ready_timeout_s: float = 60.0  # on a loaded 2-core machine a Python engine may take a while

    def __call__(self, endpoint: PodEndpoint) -> EngineLaunch:
        return EngineLaunch(
            [
                self.python,
                "-m",
                "flotilla.enginesim",
                "--host",
                endpoint.ip,
                "--port",
                str(endpoint.port),
                "--model",
                endpoint.model,
                *self.extra_args,
            ]
        )


@dataclass
class RunningEngine:
    endpoint: PodEndpoint
    process: ManagedProcess
    ready: bool = False  # its health endpoint has answered 200


class EngineLauncher:
    """Starts, tracks and stops engine processes keyed by pod (namespace/name/uid).

    `health_path` is polled after start until it answers 200 (within `ready_timeout_s`, by default
    the command's own); an engine that exits or never answers raises `ProcessFailed` with its
    log's tail.
    """

    def __init__(
        self,
        log_dir: Path,
        command: EngineCommand | None = None,
        *,
        ready_timeout_s: float | None = None,
        health_path: str = "/health",
    ) -> None:
        self.log_dir = log_dir
        self.command: EngineCommand = command or EngineSimCommand()
        self.ready_timeout_s = ready_timeout_s or self.command.ready_timeout_s
        self.health_path = health_path
        self.engines: dict[str, RunningEngine] = {}

    async def start(self, endpoint: PodEndpoint, *, wait_ready: bool = True) -> RunningEngine:
        """Start the engine for `endpoint` (idempotent per pod key) and wait until it is healthy."""
        if (running := self.engines.get(endpoint.key)) and running.process.running():
            return running
        # KWOK recycles the IPs of deleted pods: an engine still bound there belongs to a dead pod.
        for key, other in list(self.engines.items()):
            if (other.endpoint.ip, other.endpoint.port) == (endpoint.ip, endpoint.port):
                await self.stop(key)
        name = f"engine-{endpoint.namespace}-{endpoint.name}"
        launch = self.command(endpoint)
        process = ManagedProcess(
            name=name,
            argv=launch.argv,
            env=launch.env,
            log_path=self.log_dir / f"{name}-{endpoint.uid[:8]}.log",
        )
        process.start()
        engine = RunningEngine(endpoint, process)
        self.engines[endpoint.key] = engine
        log.info("engine for %s started at %s (pid %d)", endpoint.key, endpoint.url, process.pid)
        if wait_ready:
            try:
                async with httpx.AsyncClient(trust_env=False) as client:
                    await wait_http_ok(
                        client,
                        endpoint.url + self.health_path,
                        timeout_s=self.ready_timeout_s,
                        process=process,
                    )
            except BaseException:
                await self.stop(endpoint.key)
                raise
            engine.ready = True
        return engine

    async def stop(self, key: str, grace_s: float = 5.0) -> None:
        """Stop one pod's engine (SIGTERM, then SIGKILL after `grace_s`); unknown keys are ignored."""
        engine = self.engines.pop(key, None)
        if engine is not None:
            await engine.process.stop(grace_s)
            log.info("engine for %s stopped", key)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(key) for key in list(self.engines)))

    def running_keys(self) -> set[str]:
        """Pods whose engine process runs (healthy or still starting)."""
        return {key for key, engine in self.engines.items() if engine.process.running()}

    def ready_keys(self) -> set[str]:
        """Pods whose engine runs and has answered its health check."""
        return {key for key, engine in self.engines.items() if engine.ready and engine.process.running()}

    async def __aenter__(self) -> EngineLauncher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()


@contextlib.asynccontextmanager
async def loopback_engines(
    command: EngineCommand, *, count: int, model: str, log_dir: Path
) -> AsyncIterator[list[str]]:
    """`count` engines serving `model` on free ports of 127.0.0.1, for benchmarks: their URLs,
    all of them healthy; stopped on exit."""
    async with EngineLauncher(log_dir, command) as launcher:
        endpoints = [
            PodEndpoint("loopback", f"engine-{i}", f"{i:08d}", "127.0.0.1", free_port(), model)
            for i in range(count)
        ]
        await asyncio.gather(*(launcher.start(e) for e in endpoints))
        yield [e.url for e in endpoints]
