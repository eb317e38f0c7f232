"""CPU time the router process spends per proxied request, and idle (scraping), by fleet size.

    .venv/bin/python benchmarks/router/cpu_per_request.py [--requests 2000] [--instances 1,10,50]

For each fleet size N: `flotilla router run` (default policy, least_request) with N static
instances served by min(N, 5) enginesim engines (`--time-scale 0`; several instance names share an
engine, which is what lets this 2-core machine stand in for 50 instances: the router still scrapes N
endpoints every 0.25 s and ranks N instances per request). CPU time of the router process is read
from /proc: first 5 s idle (scraping only), then over `--requests` requests, 4 at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from flotilla.enginesim.process import free_port, start_engine


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(n: int, instances: int) -> None:
    engines = list(
        await asyncio.gather(
            *(start_engine(model="m", args=["--time-scale", "0"]) for _ in range(min(instances, 5)))
        )
    )
    port = free_port()
    cfg = Path(tempfile.mkdtemp()) / "router.yaml"
    listed = [{"url": engines[i % len(engines)].url, "model": "m", "name": f"i{i}"} for i in range(instances)]
    cfg.write_text(
        yaml.safe_dump(
            {"host": "127.0.0.1", "port": port, "auth": {"mode": "none"}, "static": {"instances": listed}}
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
            i0 = cpu_seconds(router.pid)
            await asyncio.sleep(5)
            idle = (cpu_seconds(router.pid) - i0) / 5
            r0 = cpu_seconds(router.pid)
            e0 = sum(cpu_seconds(e.proc.pid) for e in engines)
            t0 = time.monotonic()
            for _ in range(n // 4):
                await asyncio.gather(*(post() for _ in range(4)))
            r1 = cpu_seconds(router.pid)
            e1 = sum(cpu_seconds(e.proc.pid) for e in engines)
            window = time.monotonic() - t0
        # Scraping goes on during the requests too: its idle rate is taken out of the per-request cost.
        per_request = (r1 - r0 - idle * window) / n
        print(
            f"instances {instances:3d}: router idle (scraping) {idle * 100:.1f}% of a core; "
            f"router CPU per request {per_request * 1000:.3f} ms (all-in {(r1 - r0) / n * 1000:.3f}); "
            f"engines all-in {(e1 - e0) / n * 1000:.3f} ms",
            flush=True,
        )
    finally:
        router.terminate()
        await router.wait()
        await asyncio.gather(*(e.stop() for e in engines))


async def main(n: int, sizes: list[int]) -> None:
    for instances in sizes:
        await measure(n, instances)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--instances", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50])
    a = p.parse_args()
    asyncio.run(main(a.requests, a.instances))
