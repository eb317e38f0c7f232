"""CPU time the router process spends per proxied request (and the engine's, for scale).

    .venv/bin/python benchmarks/router/cpu_per_request.py [--requests 2000]

One enginesim engine (`--time-scale 0`), one `flotilla router run` process, 4 requests at a time;
the CPU time of both processes is read from /proc before and after (Linux only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import aiohttp
import yaml

from flotilla.enginesim.process import free_port, start_engine


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(n: int) -> None:
    engine = await start_engine(model="m", args=["--time-scale", "0"])
    port = free_port()
    cfg = Path(tempfile.mkdtemp()) / "router.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"host": "127.0.0.1", "port": port, "static": {"instances": [{"url": engine.url, "model": "m"}]}}
        )
    )
    router = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from flotilla.cli import main; main()",
        "router",
        "run",
        "-c",
        str(cfg),
        "--log-level",
        "warning",
    )
    url = f"http://127.0.0.1:{port}/v1/completions"
    body = {"model": "m", "prompt": "hello there", "max_tokens": 2, "ignore_eos": True}
    try:
        async with aiohttp.ClientSession() as client:
            for _ in range(100):
                try:
                    async with client.get(f"http://127.0.0.1:{port}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)

            async def post() -> None:
                async with client.post(url, json=body) as r:
                    await r.read()
                    assert r.status == 200

            for _ in range(50):
                await post()
            r0, e0 = cpu_seconds(router.pid), cpu_seconds(engine.proc.pid)
            for _ in range(n // 4):
                await asyncio.gather(*(post() for _ in range(4)))
            r1, e1 = cpu_seconds(router.pid), cpu_seconds(engine.proc.pid)
        print(f"router CPU per request {(r1 - r0) / n * 1000:.3f} ms; engine {(e1 - e0) / n * 1000:.3f} ms")
    finally:
        router.terminate()
        await router.wait()
        await engine.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=2000)
    asyncio.run(main(p.parse_args().requests))
