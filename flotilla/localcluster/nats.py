"""A real NATS server on a loopback port: the router replicas' shared state in tests and benchmarks.

The binary is the one `e2e/controlplane/build.sh` builds from the Go module proxy (`make binaries`);
`NatsServer` starts it, can kill it mid-test (SIGKILL: the shared component gone) and start it
again on the same port, as a restarted pod behind its Service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from flotilla.enginesim.process import free_port
from flotilla.localcluster.binaries import BinariesMissing, locate_binaries


def nats_binary() -> Path:
    path = locate_binaries().nats_server
    if not path.exists():
        raise BinariesMissing(f"nats-server missing ({path}): run `make binaries`")
    return path


class NatsServer:
    def __init__(self, binary: Path, *, port: int | None = None, token: str | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.token = token
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        args = ["-a", "127.0.0.1", "-p", str(self.port)]
        if self.token:
            args += ["--auth", self.token]
        self._proc = await asyncio.create_subprocess_exec(
            str(self.binary), *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        for _ in range(200):  # accepting connections
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            if self._proc.returncode is not None:
                raise RuntimeError(f"nats-server exited with {self._proc.returncode}")
            await asyncio.sleep(0.025)
        raise RuntimeError("nats-server did not listen within 5 s")

    async def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def nats_server(token: str | None = None) -> AsyncIterator[NatsServer]:
    server = NatsServer(nats_binary(), token=token)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
