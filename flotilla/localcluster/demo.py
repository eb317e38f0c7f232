"""`make demo` / `flotilla demo`: the main job on a local default, run as a list of steps.

Today the demo starts the local control plane with KWOK GPU nodes and shows how to reach it.
Later steps (install the CRD, run the operator, placement scheduler and router, start engines for
the fleet's pods, send traffic) are appended to `DEFAULT_STEPS`: each step is an async function of
the `DemoContext`, and registers its own clean-up on `ctx.cleanup`, which runs in reverse order
when the demo ends (Ctrl-C) or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import typer

from flotilla.localcluster.binaries import BinariesMissing, ensure_binaries
from flotilla.localcluster.controlplane import ClusterConfig, LocalCluster
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


@dataclass
class DemoContext:
    """What every demo step may use."""

    cluster: LocalCluster
    kubectl: Kubectl
    cleanup: contextlib.AsyncExitStack
    say: Callable[[str], None]


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
            ]
        )
    )


DEFAULT_STEPS: tuple[DemoStep, ...] = (show_cluster,)


async def demo(config: ClusterConfig, steps: Sequence[DemoStep] = DEFAULT_STEPS) -> None:
    """Start the cluster, run `steps`, wait for Ctrl-C, then clean everything up."""
    run_dir = default_run_dir(config.name)
    if (state := read_state(run_dir)) and alive_processes(state):
        raise typer.BadParameter(f"a demo already runs from {run_dir}; stop it first (Ctrl-C there)")
    shutil.rmtree(run_dir, ignore_errors=True)
    binaries = ensure_binaries(build=False)
    cluster = LocalCluster(config, run_dir, binaries)
    kubectl = Kubectl(binaries.kubectl, cluster.kubeconfig)
    async with interrupt_guard() as interrupted, contextlib.AsyncExitStack() as cleanup:
        ctx = DemoContext(cluster=cluster, kubectl=kubectl, cleanup=cleanup, say=typer.echo)
        typer.echo(f"Starting the local control plane in {run_dir} ...")
        # Registered before start: stop() ends whatever a cancelled or failed start left running.
        cleanup.push_async_callback(cluster.stop)
        if await unless_interrupted(_start_and_run(ctx, steps), interrupted):
            typer.echo("\nPress Ctrl-C to stop the demo and remove everything it started.")
            await interrupted.wait()
        typer.echo("Stopping ...")
    # Remove the run dir only after a clean run: on failure its logs say what went wrong.
    await asyncio.to_thread(shutil.rmtree, run_dir, True)


async def _start_and_run(ctx: DemoContext, steps: Sequence[DemoStep]) -> None:
    await ctx.cluster.start()
    for step in steps:
        await step(ctx)


def run_demo() -> None:
    try:
        asyncio.run(demo(ClusterConfig(name=DEMO_NAME)))
    except BinariesMissing as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    except ProcessFailed as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from exc
