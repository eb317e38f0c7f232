"""`make demo` / `flotilla demo`: the whole system on a local default, run as a list of steps.

The local control plane with KWOK GPU nodes; the CRD; the operator, the placement scheduler and the
router as real processes; an engine per fleet pod; the example fleets applied; a minute of a real
trace replayed through the router; a summary and a PNG. Each step is an async function of the
`DemoContext` (see demo_steps.py) and registers its own clean-up on `ctx.cleanup`, which runs in
reverse order when the demo ends (Ctrl-C, `--exit`) or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import typer

from flotilla.localcluster import demo_steps
from flotilla.localcluster.binaries import BinariesMissing, ensure_binaries
from flotilla.localcluster.controlplane import ClusterConfig, LocalCluster
from flotilla.localcluster.demo_trace import DEFAULT_TRACE, TraceFit
from flotilla.localcluster.engines import EngineLauncher
from flotilla.localcluster.kubectl import Kubectl
from flotilla.localcluster.process import ProcessFailed
from flotilla.localcluster.session import (
    alive_processes,
    default_run_dir,
    interrupt_guard,
    read_state,
    unless_interrupted,
)

DEMO_NAME = "flotilla-demo"


@dataclass(frozen=True)
class DemoOptions:
    """What `flotilla demo` can be told."""

    duration_s: float = 60.0
    """Seconds of the trace to replay."""
    rate_scale: float | None = None
    """Arrivals relative to the trace (None: 1, or 0.5 with vLLM)."""
    max_input_tokens: int | None = None
    """Prompts are cut here (None: 8192, or 1024 with vLLM)."""
    max_output_tokens: int | None = None
    """Answers are cut here (None: 1024, or 128 with vLLM)."""
    trace: Path = DEFAULT_TRACE
    examples: Path = Path("examples")
    out: Path = Path("build/demo")
    """Where summary.json, requests.json and summary.png go."""
    keep_running: bool = True
    """Wait for Ctrl-C after the summary (False: clean up and exit)."""
    ready_timeout_s: float | None = None
    """How long the fleets may take to serve (None: 120 s with enginesim, 900 s with vLLM, whose
    engines take a minute or more each to start on a shared 2-core machine)."""
    name: str = DEMO_NAME
    engine: Literal["enginesim", "vllm"] = "enginesim"
    """What serves each pod: flotilla's simulated engine, or real vLLM (CPU) with a tiny local model."""

    @property
    def fit(self) -> TraceFit:
        """How the trace is fitted to the engines. Five real vLLM processes share two CPU cores
        here: unscaled, a minute of Mooncake queued 75 of 162 requests past the client's timeout
        (README), so vLLM gets a lighter default."""
        vllm = self.engine == "vllm"
        return TraceFit(
            duration_s=self.duration_s,
            rate_scale=self.rate_scale if self.rate_scale is not None else 0.5 if vllm else 1.0,
            max_input_tokens=self.max_input_tokens or (1024 if vllm else 8192),
            max_output_tokens=self.max_output_tokens or (128 if vllm else 1024),
        )

    @property
    def serve_timeout_s(self) -> float:
        if self.ready_timeout_s is not None:
            return self.ready_timeout_s
        return 900.0 if self.engine == "vllm" else 120.0


@dataclass
class DemoContext:
    """What every demo step may use, and what steps hand to later ones."""

    cluster: LocalCluster
    kubectl: Kubectl
    cleanup: contextlib.AsyncExitStack
    say: Callable[[str], None]
    options: DemoOptions = field(default_factory=DemoOptions)
    launcher: EngineLauncher | None = None
    router_url: str | None = None
    fleets: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None


DemoStep = Callable[[DemoContext], Awaitable[None]]


async def show_cluster(ctx: DemoContext) -> None:
    """Print how to reach the cluster, and its GPU nodes as kubectl sees them."""
    nodes = await ctx.kubectl.run(
        "get", "nodes", "-L", "nvidia.com/gpu.product,topology.kubernetes.io/zone,nvidia.com/gpu.count"
    )
    ctx.say(
        "\n".join(
            [
                "",
                "The local control plane is up (etcd, kube-apiserver, kube-controller-manager,",
                "kube-scheduler, KWOK). Reach it from another terminal with:",
                "",
                f"  export KUBECONFIG={ctx.cluster.kubeconfig}",
                f"  {ctx.kubectl.binary} get nodes",
                "",
                nodes.rstrip(),
                "",
                f"Logs: {ctx.cluster.run_dir / 'logs'}",
                "",
            ]
        )
    )


DEFAULT_STEPS: tuple[DemoStep, ...] = (
    show_cluster,
    demo_steps.install_crd,
    demo_steps.run_operator,
    demo_steps.run_placement,
    demo_steps.run_engines,
    demo_steps.run_router,
    demo_steps.apply_examples,
    demo_steps.wait_fleets_serving,
    demo_steps.replay_and_report,
)


async def demo(
    config: ClusterConfig, steps: Sequence[DemoStep] = DEFAULT_STEPS, options: DemoOptions | None = None
) -> DemoContext:
    """Start the cluster, run `steps`, wait for Ctrl-C (unless told not to), then clean up."""
    options = options or DemoOptions()
    run_dir = default_run_dir(config.name)
    if (state := read_state(run_dir)) and alive_processes(state):
        raise typer.BadParameter(f"a demo already runs from {run_dir}; stop it first (Ctrl-C there)")
    await asyncio.to_thread(shutil.rmtree, run_dir, True)
    binaries = await asyncio.to_thread(ensure_binaries, build=False)
    cluster = LocalCluster(config, run_dir, binaries)
    kubectl = Kubectl(binaries.kubectl, cluster.kubeconfig)
    async with interrupt_guard() as interrupted, contextlib.AsyncExitStack() as cleanup:
        ctx = DemoContext(cluster=cluster, kubectl=kubectl, cleanup=cleanup, say=typer.echo, options=options)
        typer.echo(f"Starting the local control plane in {run_dir} ...")
        # Registered before start: stop() ends whatever a cancelled or failed start left running.
        cleanup.push_async_callback(cluster.stop)
        finished = await unless_interrupted(_start_and_run(ctx, steps), interrupted)
        if finished and options.keep_running:
            typer.echo("\nThe system keeps running: try the router, kubectl, the logs.")
            if ctx.router_url:
                typer.echo(f"  curl {ctx.router_url}/v1/models")
            typer.echo("Press Ctrl-C to stop the demo and remove everything it started.")
            await interrupted.wait()
        typer.echo("Stopping ...")
    # Remove the run dir only after a clean run: on failure its logs say what went wrong.
    await asyncio.to_thread(shutil.rmtree, run_dir, True)
    return ctx


async def _start_and_run(ctx: DemoContext, steps: Sequence[DemoStep]) -> None:
    await ctx.cluster.start()
    for step in steps:
        await step(ctx)


def run_demo(options: DemoOptions | None = None) -> None:
    options = options or DemoOptions()
    try:
        asyncio.run(demo(ClusterConfig(name=options.name), options=options))
    except BinariesMissing as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    except (ProcessFailed, TimeoutError) as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from exc
