"""Replay a trace slice on real engine processes through the real router, then in the simulator.

    .venv/bin/python benchmarks/sim/validate.py [--workload azure_conv] [--requests 300] [--engines 3]
        [--load 0.6] [--time-scale 10] [--policy least_request]
    .venv/bin/python benchmarks/sim/validate.py --engine vllm [--workload ...]   # real vLLM (CPU)

With `--engine enginesim` (the default) the engines are `flotilla.enginesim` processes on 127.0.0.1,
timed by the shipped profile with every step stretched by `--time-scale` (so that the Python
overheads of the engine, router and client stay small next to the modelled step times). With
`--engine vllm` they are real vLLM (CPU) processes serving the local benchmark model, one core each, and
the simulator runs the profile measured on that engine (`vllm-cpu-bench`,
benchmarks/vllm_cpu_profile) at its own speed: this compares the simulator with a real engine,
hardware model included. The router is `flotilla router run` with a static instance list. An open-
loop client sends each request at its trace time (a later turn of a session not before its earlier
turn completed) as a streaming completion with token-id prompts (shared trace blocks become shared
token blocks, so prefix caching is real), `max_tokens` = the trace's output length and `ignore_eos`,
and records TTFT and end-to-end latency. The simulator then runs the same requests, at the times
they were actually sent, on the same profile (scaled by the same factor), limits, policy and scrape
interval, and the errors of mean TTFT and mean end-to-end latency are reported.

What the enginesim run validates: the simulator's router, queueing, batching and timing mechanics
against a real asynchronous system (HTTP, streaming, scrapes, concurrency), not the hardware model,
because enginesim sleeps for the same profile the simulator adds up. The vLLM run validates both,
against an engine the simulator shares nothing with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import yaml

from flotilla.loadgen.stream import aiter_sse_lines
from flotilla.localcluster.engines import EngineCommand, EngineSimCommand, loopback_engines
from flotilla.localcluster.ports import free_port
from flotilla.profiles import StepTimeProfile, load_profile
from flotilla.sim import workloads
from flotilla.sim.capacity import measured_capacity
from flotilla.sim.request import SimRequest
from flotilla.sim.scenario import Scenario
from flotilla.sim.simulator import SimConfig, simulate

MODEL = "sim-llm"
VOCABS = {"enginesim": (0, 256), "vllm": (3, 2048)}
"""Token ids prompts are drawn from: enginesim's byte tokens; the tiny model's vocabulary less
its three special tokens."""


@dataclass
class Observed:
    sent: float = float("nan")
    first: float = float("nan")
    done: float = float("nan")
    tokens: int = 0
    error: str | None = None


def prompt_tokens(req: SimRequest, vocab: tuple[int, int]) -> list[int]:
    """Token ids whose blocks are equal exactly where the trace's prefix ids are equal."""
    out: list[int] = []
    t = req.prefix_block_tokens
    b = 0
    while len(out) < req.prompt_tokens:
        seed = req.prefix_ids[b] if b < len(req.prefix_ids) else 10**12 + req.id * 10**4 + b
        rng = random.Random(seed)
        out.extend(rng.randrange(*vocab) for _ in range(min(t, req.prompt_tokens - len(out))))
        b += 1
    return out


def scaled(profile: StepTimeProfile, factor: float) -> StepTimeProfile:
    c = profile.coefficients
    fields = {k: v * factor for k, v in c.model_dump().items() if k.endswith("_s")}
    return profile.model_copy(update={"coefficients": c.model_copy(update=fields)})


async def send(  # noqa: PLR0917
    client: httpx.AsyncClient,
    url: str,
    req: SimRequest,
    obs: Observed,
    t0: float,
    parent: asyncio.Event | None,
    vocab: tuple[int, int],
) -> None:
    await asyncio.sleep(max(0.0, t0 + req.arrival - time.monotonic()))
    if parent is not None:
        await parent.wait()
    body = {
        "model": MODEL,
        "prompt": prompt_tokens(req, vocab),
        "max_tokens": req.output_tokens,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
    }
    obs.sent = time.monotonic() - t0
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                obs.error = f"{resp.status_code}: {(await resp.aread())[:200]!r}"
                return
            async for line in aiter_sse_lines(resp):
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices", ()):
                    n = len(choice.get("token_ids") or ())
                    if n and obs.tokens == 0:
                        obs.first = time.monotonic() - t0
                    obs.tokens += n
        obs.done = time.monotonic() - t0
    except httpx.HTTPError as e:
        obs.error = repr(e)


async def start_router(
    urls: list[str], policy: str, scrape_s: float, folder: Path
) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    config = {
        "host": "127.0.0.1",
        "port": port,
        "default_policy": policy,
        "scrape_interval_s": scrape_s,
        "seed": 0,
        "auth": {"mode": "none"},
        "static": {"instances": [{"url": u, "model": MODEL} for u in urls]},
    }
    path = folder / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    exe = Path(sys.executable).parent / "flotilla"
    proc = await asyncio.create_subprocess_exec(
        str(exe), "router", "run", "--config", str(path), "--log-level", "warning"
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=1.0) as client:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/v1/models")).status_code == 200:
                    await asyncio.sleep(3 * scrape_s)  # let the first scrapes land
                    return proc, url
            await asyncio.sleep(0.1)
    proc.kill()
    raise TimeoutError("router did not come up")


def engine_command(args: argparse.Namespace) -> EngineCommand:
    """enginesim processes, or vLLM processes (one core each, the benchmark model)."""
    if args.engine == "enginesim":
        return EngineSimCommand(extra_args=("--profile", args.profile, "--time-scale", str(args.time_scale)))
    from flotilla.vllmcpu.command import VllmCommand
    from flotilla.vllmcpu.install import ensure_vllm

    return VllmCommand(ensure_vllm(install=True), size="bench", max_model_len=args.max_model_len)


async def replay(reqs: list[SimRequest], args: argparse.Namespace) -> list[Observed]:
    router: asyncio.subprocess.Process | None = None
    vocab = VOCABS[args.engine]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            command = engine_command(args)
            async with loopback_engines(
                command, count=args.engines, model=MODEL, log_dir=folder / "engines"
            ) as urls:
                router, url = await start_router(urls, args.policy, args.scrape_interval, folder)
                observed = [Observed() for _ in reqs]
                done = {r.id: asyncio.Event() for r in reqs}

                async def one(r: SimRequest, obs: Observed) -> None:
                    parent = done.get(r.parent) if r.parent is not None else None
                    try:
                        await send(client, url, r, obs, t0, parent, vocab)
                    finally:
                        done[r.id].set()

                limits = httpx.Limits(max_connections=4096, max_keepalive_connections=4096)
                async with httpx.AsyncClient(timeout=None, limits=limits) as client:
                    t0 = time.monotonic() + 0.5
                    await asyncio.gather(*(one(r, o) for r, o in zip(reqs, observed, strict=True)))
                return observed
    finally:
        if router is not None and router.returncode is None:
            router.terminate()
            await router.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default="azure_conv", choices=sorted(workloads.TRACES))
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--engines", type=int, default=3)
    p.add_argument("--load", type=float, default=0.6, help="fraction of the fleet's measured capacity")
    p.add_argument("--time-scale", type=float, default=10.0)
    p.add_argument("--policy", default="least_request")
    p.add_argument("--profile", default="h100-llama3-8b")
    p.add_argument("--scrape-interval", type=float, default=0.25)
    p.add_argument("--max-model-len", type=int, default=32768, help="clip longer trace requests")
    p.add_argument("--out", type=Path, default=Path("benchmarks/sim"))
    p.add_argument("--engine", choices=["enginesim", "vllm"], default="enginesim")
    args = p.parse_args()
    if args.engine == "vllm":  # the engine's own speed, and the profile measured on it
        args.profile, args.time_scale = "vllm-cpu-bench", 1.0
        args.max_model_len = min(args.max_model_len, 8192)

    profile = scaled(load_profile(args.profile), args.time_scale)
    limits = profile.limits.model_copy(update={"max_model_len": args.max_model_len})
    w = workloads.load(args.workload, max_model_len=args.max_model_len, limit=args.requests)
    capacity = measured_capacity(w.requests, profile, limits, args.engines) * args.engines
    reqs = workloads.at_rate(w.requests, args.load * capacity)
    rate = args.load * capacity
    print(f"{len(reqs)} requests at {rate:.2f} req/s on {args.engines} engines (x{args.time_scale})")
    start = time.monotonic()
    observed = asyncio.run(replay(reqs, args))
    wall = time.monotonic() - start
    errors = [o.error for o in observed if o.error]
    if errors:
        print(f"{len(errors)} requests failed, e.g. {errors[0]}")
    ok = [i for i, o in enumerate(observed) if o.error is None and np.isfinite(o.done)]
    sent = [
        SimRequest(
            r.id,
            observed[i].sent,
            r.prompt_tokens,
            r.output_tokens,
            r.prefix_ids,
            r.prefix_block_tokens,
            r.parent,
        )
        for i, r in enumerate(reqs)
    ]
    sim = simulate(
        sent,
        profile,
        limits,
        Scenario(name=args.policy, policy=args.policy),
        SimConfig(instances=args.engines, scrape_interval_s=args.scrape_interval, model=MODEL),
    )
    real_ttft = np.array([observed[i].first - observed[i].sent for i in ok])
    real_e2e = np.array([observed[i].done - observed[i].sent for i in ok])
    sim_ttft = (sim.first_token - sim.arrival)[ok]
    sim_e2e = (sim.finished - sim.arrival)[ok]
    tokens_ok = all(observed[i].tokens == reqs[i].output_tokens for i in ok)

    def stat(name: str, real: np.ndarray, simulated: np.ndarray, q: float | None) -> tuple[str, float, float]:
        def f(a: np.ndarray) -> float:
            return float(a.mean() if q is None else np.percentile(a, q))

        return name, f(real), f(simulated)

    rows = [
        stat(f"{which} {kind} s", real, simulated, q)
        for kind, real, simulated in (("TTFT", real_ttft, sim_ttft), ("e2e", real_e2e, sim_e2e))
        for which, q in (("mean", None), ("p50", 50.0), ("p99", 99.0))
    ]
    real = "real vLLM (CPU) + router" if args.engine == "vllm" else "real (enginesim + router)"
    table = [f"| metric | {real} | simulator | error |", "|---|---:|---:|---:|"]
    table += [f"| {name} | {a:.3f} | {b:.3f} | {(b - a) / a:+.1%} |" for name, a, b in rows]
    report = (
        f"## {w.name}: {len(ok)}/{len(reqs)} requests, {args.engines} engines, policy {args.policy}, "
        f"load {args.load:.0%} of measured capacity ({rate:.2f} req/s), time scale x{args.time_scale:g}\n\n"
        f"Every request streamed exactly its trace output length: {tokens_ok}. "
        f"Replay wall time {wall:.0f} s.\n\n" + "\n".join(table) + "\n"
    )
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = "validation-vllm-" if args.engine == "vllm" else "validation-"
    (args.out / f"{prefix}{args.workload}.md").write_text(report)


if __name__ == "__main__":
    main()
