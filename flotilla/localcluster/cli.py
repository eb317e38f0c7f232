"""`flotilla cluster up|down|status`: the local control plane for a person at a terminal."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Start, inspect or stop the local control plane.")

NAME = typer.Option("flotilla-local", "--name", help="Cluster name (its run dir is named after it).")
RUN_DIR = typer.Option(None, "--run-dir", help="Default: ~/.cache/flotilla/clusters/NAME.")


def _run_dir(name: str, run_dir: Path | None) -> Path:
    from flotilla.localcluster.session import default_run_dir

    return run_dir or default_run_dir(name)


@app.command()
def up(
    *,
    name: str = NAME,
    run_dir: Path | None = RUN_DIR,
    nodes: int = typer.Option(4, "--nodes", min=0, help="Fake GPU nodes to create."),
    gpus: int = typer.Option(8, "--gpus", min=0, help="nvidia.com/gpu per node."),
    gpu_product: str = typer.Option("NVIDIA-H100-80GB-HBM3", "--gpu-product"),
    scheduler: bool = typer.Option(True, "--scheduler/--no-scheduler", help="Run kube-scheduler."),
    foreground: bool = typer.Option(False, "--foreground", help="Stay attached; Ctrl-C stops all."),
) -> None:
    """Start etcd, kube-apiserver, controller-manager, scheduler and KWOK with fake GPU nodes."""
    from flotilla.localcluster.binaries import BinariesMissing, ensure_binaries
    from flotilla.localcluster.controlplane import ClusterConfig, LocalCluster
    from flotilla.localcluster.session import alive_processes, interrupt_guard, read_state, unless_interrupted

    directory = _run_dir(name, run_dir)
    if (state := read_state(directory)) and alive_processes(state):
        typer.echo(f"cluster {name} already runs (see `flotilla cluster status --name {name}`)", err=True)
        raise typer.Exit(1)
    shutil.rmtree(directory, ignore_errors=True)
    try:
        binaries = ensure_binaries(build=False)
    except BinariesMissing as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    config = ClusterConfig(
        name=name,
        gpu_nodes=nodes,
        gpus_per_node=gpus,
        gpu_product=gpu_product,
        scheduler=scheduler,
        detached=not foreground,
    )
    cluster = LocalCluster(config, directory, binaries)

    async def main() -> None:
        async with interrupt_guard() as interrupted:
            if not await unless_interrupted(cluster.start(), interrupted):
                await cluster.stop(remove_run_dir=True)
                return
            typer.echo(_how_to_reach(cluster.kubeconfig, binaries.kubectl))
            if foreground:
                typer.echo("Ctrl-C stops the cluster.")
                await interrupted.wait()
                await cluster.stop(remove_run_dir=True)

    asyncio.run(main())


@app.command()
def down(
    name: str = NAME,
    run_dir: Path | None = RUN_DIR,
    keep: bool = typer.Option(False, "--keep", help="Keep the run dir (logs, kubeconfig)."),
) -> None:
    """Stop the cluster's processes (by recorded pid) and remove its run dir."""
    from flotilla.localcluster.session import read_state, terminate_state

    directory = _run_dir(name, run_dir)
    state = read_state(directory)
    if state is None:
        typer.echo(f"no cluster state in {directory}", err=True)
        raise typer.Exit(1)
    stopped = terminate_state(state)
    if not keep:
        shutil.rmtree(directory, ignore_errors=True)
    typer.echo(f"stopped {', '.join(stopped)}" + ("" if keep else f"; removed {directory}"))


@app.command()
def status(name: str = NAME, run_dir: Path | None = RUN_DIR) -> None:
    """Show which components run and whether the API server is ready (exit 1 if not)."""
    from flotilla.localcluster.session import alive_processes, read_state

    directory = _run_dir(name, run_dir)
    state = read_state(directory)
    if state is None:
        typer.echo(f"no cluster state in {directory}", err=True)
        raise typer.Exit(1)
    alive = alive_processes(state)
    for component, info in state["processes"].items():
        mark = f"running (pid {info['pid']})" if component in alive else "NOT running"
        typer.echo(f"{component:<24} {mark}   log: {info['log']}")
    ready = _readyz(Path(state["run_dir"]) / "pki", state["server"])
    typer.echo(f"{'/readyz':<24} {ready}")
    typer.echo(f"export KUBECONFIG={state['kubeconfig']}")
    if len(alive) != len(state["processes"]) or ready != "ok":
        raise typer.Exit(1)


def _readyz(pki: Path, server: str) -> str:
    import ssl

    import httpx

    try:
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        return httpx.get(f"{server}/readyz", verify=context, timeout=3.0, trust_env=False).text
    except (OSError, httpx.HTTPError) as exc:
        return f"unreachable ({exc.__class__.__name__})"


def _how_to_reach(kubeconfig: Path, kubectl: Path) -> str:
    return "\n".join(
        [
            "The local control plane is up. To reach it:",
            f"  export KUBECONFIG={kubeconfig}",
            f"  alias kubectl={kubectl}   # built with Kubernetes, or use your own",
            "  kubectl get nodes -L nvidia.com/gpu.product,topology.kubernetes.io/zone",
        ]
    )
