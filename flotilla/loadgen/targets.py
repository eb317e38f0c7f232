"""The routers under test, each started as its own process in front of the same engines.

An arm is one router configuration: flotilla's router with a policy (and a slice length), or a Rust
router from PyPI with its policy. Each arm run gets a fresh router process, so no arm inherits
another's prefix tree or load counters; a router is ready once it answers a one-token completion
(sglang-router registers its workers in the background after its port opens).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field

from flotilla.enginesim.process import free_port, stop_process

RouterKind = Literal["flotilla", "vllm-router", "sglang-router", "direct"]


class Arm(BaseModel):
    """One router configuration of the comparison."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    router: RouterKind
    policy: str
    params: dict[str, Any] = Field(default_factory=dict)
    slice_tokens: int = Field(default=0, ge=0)
    extra_args: tuple[str, ...] = ()
    """More command-line flags (Rust routers)."""
    config: dict[str, Any] = Field(default_factory=dict)
    """More router configuration (flotilla), e.g. the backlog's `kv_usage_limit`, `queue_order`."""
    replicas: int = Field(default=1, ge=1)
    """Router processes (flotilla); the load generator deals requests over them in turn, as a
    Service spreads connections over a Deployment's pods."""
    shared_state: bool = False
    """The replicas share their routing state over the run's NATS server (`router.peers`)."""


def default_arms(slice_tokens: Sequence[int] = (64, 256)) -> list[Arm]:
    """The comparison of issues 7 and 8: no router at all (the client deals requests to the engines
    in turn: what routing work costs), a Kubernetes Service's round robin as the baseline, our
    policies, slicing on the default policy, and each Rust router with its default policy, which is
    also its recommended one (cache_aware; vllm-router's kv_aware needs engine KV events over ZMQ)."""
    arms = [
        Arm(name="direct", router="direct", policy="round_robin"),
        Arm(name="round_robin", router="flotilla", policy="round_robin"),
        Arm(name="least_request", router="flotilla", policy="least_request"),
        Arm(name="prefix_affinity", router="flotilla", policy="prefix_affinity"),
        Arm(name="predicted_load", router="flotilla", policy="predicted_load"),
        Arm(name="least_work", router="flotilla", policy="least_work"),
        Arm(name="least_work+prefix", router="flotilla", policy="least_work", params={"prefix_match": True}),
    ]
    arms += [
        Arm(name=f"least_request+S{s}", router="flotilla", policy="least_request", slice_tokens=s)
        for s in slice_tokens
    ]
    arms += backlog_arms()
    arms += [
        Arm(name="vllm-router cache_aware", router="vllm-router", policy="cache_aware"),
        Arm(name="sglang-router cache_aware", router="sglang-router", policy="cache_aware"),
    ]
    return arms


def backlog_arms() -> list[Arm]:
    """Issue 17's router-held backlog on least_work+prefix: as before it (no KV budget, arrival
    order), the router's defaults since (KV budget 0.9, shortest_work_first), those with the
    target batch of the engines' step-time profile (`batch_target`), and a fixed number of router
    slots per engine (`max_inflight_per_instance`, below the engines' `max_num_seqs`), in arrival
    order and in the default order: a backlog that forms whatever the engines' KV cache."""
    lwp: dict[str, Any] = {"router": "flotilla", "policy": "least_work", "params": {"prefix_match": True}}
    target = {"profile": "h100-llama3-8b", "max_decode_slowdown": 2.0}
    return [
        Arm(name="lw+prefix, no backlog", config={"kv_usage_limit": None, "queue_order": "fcfs"}, **lwp),
        Arm(name="lw+prefix, defaults", **lwp),
        Arm(name="lw+prefix, defaults + target 2x", config={"batch_target": target}, **lwp),
        *(
            arm
            for n in (4, 8)
            for arm in (
                Arm(
                    name=f"lw+prefix, {n} slots, fcfs",
                    config={"max_inflight_per_instance": n, "queue_order": "fcfs"},
                    **lwp,
                ),
                Arm(name=f"lw+prefix, {n} slots, defaults", config={"max_inflight_per_instance": n}, **lwp),
            )
        ),
    ]


def replica_arms(policy: str = "least_request") -> list[Arm]:
    """Issue 18: 1, 2 and 4 router replicas with their own state only, and sharing it over NATS,
    on the chart's default policy."""
    arms = [Arm(name="1 replica", router="flotilla", policy=policy)]
    for n in (2, 4):
        arms += [
            Arm(name=f"{n} replicas, own state", router="flotilla", policy=policy, replicas=n),
            Arm(
                name=f"{n} replicas, shared", router="flotilla", policy=policy, replicas=n, shared_state=True
            ),
        ]
    return arms


def rust_router_binary(kind: RouterKind) -> str:
    """The console script installed with the PyPI package (next to this interpreter, else on PATH)."""
    local = Path(sys.executable).parent / kind
    if local.exists():
        return str(local)
    found = shutil.which(kind)
    if found is None:
        raise FileNotFoundError(f"{kind} not installed: pip install 'flotilla[bench]'")
    return found


def flotilla_config(
    arm: Arm,
    *,
    port: int,
    model: str,
    engines: Sequence[str],
    seed: int,
    peers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    routing: dict[str, Any] = {"policy": arm.policy, "params": dict(arm.params)}
    if arm.slice_tokens:
        routing["slice_tokens"] = arm.slice_tokens
    return {
        **arm.config,
        **({"peers": peers} if peers is not None else {}),
        "host": "127.0.0.1",
        "port": port,
        "auth": {"mode": "none"},
        "seed": seed,
        "static": {
            "instances": [{"url": u, "model": model, "name": f"e{i}"} for i, u in enumerate(engines)],
            "models": {model: routing},
        },
    }


def command(arm: Arm, *, port: int, engines: Sequence[str], config_path: Path) -> list[str]:
    if arm.router == "flotilla":
        entry = "from flotilla.cli import main; main()"
        return [
            sys.executable,
            "-c",
            entry,
            "router",
            "run",
            "-c",
            str(config_path),
            "--log-level",
            "warning",
        ]
    if arm.router == "direct":
        raise ValueError("the direct arm has no router process")
    metrics_port = str(free_port())
    common = ["--host", "127.0.0.1", "--port", str(port), "--worker-urls", *engines, "--policy", arm.policy]
    if arm.router == "vllm-router":
        return [
            rust_router_binary("vllm-router"),
            *common,
            "--log-level",
            "warning",
            "--prometheus-port",
            metrics_port,
            *arm.extra_args,
        ]
    return [
        rust_router_binary("sglang-router"),
        "launch",
        *common,
        "--log-level",
        "warn",
        "--prometheus-port",
        metrics_port,
        *arm.extra_args,
    ]


async def wait_ready(url: str, model: str, within_s: float) -> None:
    """Until a one-token completion through the router succeeds."""
    deadline = time.monotonic() + within_s
    body = {"model": model, "prompt": "ready?", "max_tokens": 1}
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.post(url + "/v1/completions", json=body)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"router at {url} not ready after {within_s:.0f}s")
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def started_router(
    arm: Arm,
    *,
    model: str,
    engines: Sequence[str],
    workdir: Path,
    seed: int,
    ready_s: float = 60.0,
    nats_url: str | None = None,
) -> AsyncIterator[list[str]]:
    """Start the arm's router (its replicas), yield their base URLs, stop them (SIGTERM, then
    SIGKILL). The `direct` arm starts nothing and yields the engines' URLs. `nats_url`: the run's
    NATS server, for arms with shared state."""
    if arm.router == "direct":
        yield list(engines)
        return
    if arm.shared_state and nats_url is None:
        raise ValueError(f"{arm.name}: shared state needs the run's NATS server")
    async with contextlib.AsyncExitStack() as stack:
        urls = [
            await stack.enter_async_context(
                _one_router(
                    arm,
                    k,
                    model=model,
                    engines=engines,
                    workdir=workdir,
                    seed=seed,
                    ready_s=ready_s,
                    nats_url=nats_url,
                )
            )
            for k in range(arm.replicas)
        ]
        yield urls


@contextlib.asynccontextmanager
async def _one_router(
    arm: Arm,
    k: int,
    *,
    model: str,
    engines: Sequence[str],
    workdir: Path,
    seed: int,
    ready_s: float,
    nats_url: str | None,
) -> AsyncIterator[str]:
    port = free_port()
    slug = "".join(c if c.isalnum() else "_" for c in arm.name) + (f"_{k}" if arm.replicas > 1 else "")
    config_path = workdir / f"{slug}.yaml"
    if arm.router == "flotilla":
        peers = {"url": nats_url, "replica": slug} if arm.shared_state else None
        # Replicas differ in their tie-breaking seed, as pods seeded from the OS do.
        config = flotilla_config(arm, port=port, model=model, engines=engines, seed=seed + k, peers=peers)
        await asyncio.to_thread(config_path.write_text, yaml.safe_dump(config))
    log = await asyncio.to_thread((workdir / f"{slug}.log").open, "ab")
    proc = await asyncio.create_subprocess_exec(
        *command(arm, port=port, engines=engines, config_path=config_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = asyncio.create_task(wait_ready(url, model, ready_s))
        exited = asyncio.create_task(proc.wait())
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise RuntimeError(f"{arm.name}: router exited with {proc.returncode}; see {workdir / slug}.log")
        exited.cancel()
        ready.result()
        yield url
    finally:
        await stop_process(proc, 10)
        log.close()
