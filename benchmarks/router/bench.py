"""Router overhead: the same engines called directly, through flotilla's router, and through
vllm-router (the Rust router from PyPI), side by side in one run.

Open-loop Poisson arrivals at fixed rates (latency percentiles and the latency each router adds
over calling the engines directly), then a closed loop with many concurrent clients (the most
requests per second each path sustains). Engines are flotilla.enginesim processes with zero step
time (`--time-scale 0`), so what is measured is HTTP and routing work, not model time. Everything
(load generator, routers, engines) shares this machine's cores: see README.md for what that means.

    .venv/bin/python benchmarks/router/bench.py            # writes results.json, results.md, latency.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import httpx
import yaml

from flotilla.enginesim.process import EngineProcess, free_port, start_engine, stop_process

HERE = Path(__file__).parent
MODEL = "bench"


@dataclass
class Run:
    target: str
    mode: str  # "open" (fixed rate) or "closed" (fixed concurrency)
    offered: float  # requests/s offered, or concurrency
    sent: int
    ok: int
    errors: int
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarise(target: str, mode: str, offered: float, *, lat: list[float], errors: int, wall: float) -> Run:
    ms = [x * 1000 for x in lat]
    return Run(
        target,
        mode,
        offered,
        len(lat) + errors,
        len(lat),
        errors,
        len(lat) / wall,
        pct(ms, 0.5),
        pct(ms, 0.9),
        pct(ms, 0.99),
        statistics.fmean(ms) if ms else float("nan"),
    )


class Target:
    def __init__(self, name: str, urls: list[str]) -> None:
        self.name = name
        self.urls = urls
        self._i = 0

    def next_url(self) -> str:
        self._i += 1
        return self.urls[self._i % len(self.urls)]


BODY = {
    "model": MODEL,
    "prompt": "The quick brown fox jumps over the lazy dog",
    "max_tokens": 8,
    "temperature": 0,
    "ignore_eos": True,
}


PAYLOAD = json.dumps(BODY).encode()
HEADERS = {"content-type": "application/json"}
MAX_OUTSTANDING = 256  # beyond it the offered rate is not sustained: the point is marked, not queued


async def one(client: aiohttp.ClientSession, url: str, lat: list[float], errs: list[int]) -> None:
    t0 = time.perf_counter()
    try:
        async with client.post(url + "/v1/completions", data=PAYLOAD, headers=HEADERS) as r:
            await r.read()
            if r.status == 200:
                lat.append(time.perf_counter() - t0)
                return
    except (aiohttp.ClientError, TimeoutError):
        pass
    errs.append(1)


async def open_loop(
    client: httpx.AsyncClient, target: Target, rate: float, duration: float, seed: int
) -> Run:
    rng = random.Random(seed)
    lat: list[float] = []
    errs: list[int] = []
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    next_at = start
    while next_at - start < duration:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(client, target.next_url(), lat, errs)))
        next_at += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    return summarise(target.name, "open", rate, lat=lat, errors=len(errs), wall=time.perf_counter() - start)


async def closed_loop(
    client: aiohttp.ClientSession, target: Target, concurrency: int, duration: float
) -> Run:
    lat: list[float] = []
    errs: list[int] = []
    stop = time.perf_counter() + duration
    start = time.perf_counter()

    async def worker() -> None:
        while time.perf_counter() < stop:
            await one(client, target.next_url(), lat, errs)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarise(
        target.name, "closed", concurrency, lat=lat, errors=len(errs), wall=time.perf_counter() - start
    )


async def wait_ready(url: str, path: str = "/health", within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=1) as c:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(url + path)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready")


@contextlib.asynccontextmanager
async def process(*cmd: str, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL
        )
        try:
            yield proc
        finally:
            await stop_process(proc, 10)


def vllm_router_binary(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    found = shutil.which("vllm-router")
    if found:
        return found
    local = Path(sys.executable).parent / "vllm-router"
    return str(local) if local.exists() else None


async def main(args: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="router-bench-"))
    engines: list[EngineProcess] = []
    try:
        engines = list(
            await asyncio.gather(
                *(
                    start_engine(model=MODEL, args=["--time-scale", "0", "--max-num-seqs", "256"])
                    for _ in range(args.engines)
                )
            )
        )
        urls = [e.url for e in engines]
        fl_port, vr_port = free_port(), free_port()
        cfg = {
            "host": "127.0.0.1",
            "port": fl_port,
            "default_policy": "round_robin",
            "auth": {"mode": "none"},
            "static": {"instances": [{"url": u, "model": MODEL} for u in urls]},
        }
        await asyncio.to_thread((workdir / "router.yaml").write_text, yaml.safe_dump(cfg))
        targets = [Target("direct", urls)]
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(
                process(
                    sys.executable,
                    "-c",
                    "from flotilla.cli import main; main()",
                    "router",
                    "run",
                    "-c",
                    str(workdir / "router.yaml"),
                    "--log-level",
                    "warning",
                    log=workdir / "flotilla.log",
                )
            )
            await wait_ready(f"http://127.0.0.1:{fl_port}")
            targets.append(Target("flotilla", [f"http://127.0.0.1:{fl_port}"]))
            vr = vllm_router_binary(args.vllm_router)
            if vr:
                await stack.enter_async_context(
                    process(
                        vr,
                        "--worker-urls",
                        *urls,
                        "--policy",
                        "round_robin",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(vr_port),
                        "--log-level",
                        "warning",
                        log=workdir / "vllm-router.log",
                    )
                )
                try:
                    await wait_ready(f"http://127.0.0.1:{vr_port}", "/health")
                except TimeoutError:
                    print((workdir / "vllm-router.log").read_bytes()[-3000:].decode(errors="replace"))
                    raise
                targets.append(Target("vllm-router", [f"http://127.0.0.1:{vr_port}"]))
            else:
                print("vllm-router not found (pip install vllm-router): comparing direct and flotilla only")
            runs: list[Run] = []
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
                for t in targets:  # warm-up: connections and allocators
                    await open_loop(client, t, 50, 1.0, 0)
                for rate in args.rates:
                    point = []
                    for t in targets:  # interleaved, so drift on a shared machine hits all alike
                        run = await open_loop(client, t, rate, args.duration, seed=int(rate))
                        point.append(run)
                        print(json.dumps(asdict(run)), flush=True)
                    runs += point
                    if point[0].achieved_rps < 0.9 * rate:
                        print(f"direct calls no longer keep up at {rate:g} req/s: higher rates not run")
                        break
                for t in targets:
                    run = await closed_loop(client, t, args.concurrency, args.duration)
                    runs.append(run)
                    print(json.dumps(asdict(run)))
        meta = {
            "engines": args.engines,
            "duration_s": args.duration,
            "cpus": os.cpu_count(),
            "body": BODY,
            "vllm_router": bool(vr),
        }
        return {"meta": meta, "runs": [asdict(r) for r in runs]}
    finally:
        await asyncio.gather(*(e.stop() for e in engines))
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--engines", type=int, default=2)
    p.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[25, 50, 100, 150, 200, 300, 500]
    )
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--vllm-router", help="path of the vllm-router binary")
    p.add_argument("--out", default=str(HERE))
    a = p.parse_args()
    try:
        import uvloop

        results = uvloop.run(main(a))
    except ImportError:
        results = asyncio.run(main(a))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    sys.path.insert(0, str(HERE))
    from report import write_report

    write_report(out)
