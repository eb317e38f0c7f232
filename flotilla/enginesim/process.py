"""Start and stop enginesim processes on loopback ports (for tests, benchmarks and demos)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from flotilla.localcluster.ports import free_port

# free_port is re-exported: tests and benchmarks pick an engine's port with it.
__all__ = ["EngineProcess", "free_port", "start_engine", "stop_process"]


@dataclass
class EngineProcess:
    host: str
    port: int
    model: str
    proc: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kill(self) -> None:
        """SIGKILL: an engine crash, as the router's failover tests need it."""
        if self.proc.returncode is None:
            self.proc.kill()

    async def stop(self, grace_s: float = 5.0) -> None:
        await stop_process(self.proc, grace_s)


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_s`; returns once it is reaped."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            proc.kill()
    await proc.wait()


async def start_engine(
    *,
    model: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    args: Sequence[str] = (),
    ready_timeout: float = 30.0,
) -> EngineProcess:
    """Spawn ``python -m flotilla.enginesim`` and wait until /health answers."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "flotilla.enginesim", "--host", host, "--port", str(port), "--model", model]
    proc = await asyncio.create_subprocess_exec(*cmd, *args, stdin=asyncio.subprocess.DEVNULL)
    engine = EngineProcess(host, port, model, proc)
    deadline = time.monotonic() + ready_timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"enginesim exited with {proc.returncode} before becoming ready")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{engine.url}/health")).status_code == 200:
                    return engine
            if time.monotonic() > deadline:
                await engine.stop()
                raise TimeoutError(f"enginesim on {engine.url} not ready after {ready_timeout}s")
            await asyncio.sleep(0.05)
