"""`flotilla operator` sub-commands: run the operator, print its CRD or RBAC manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run(
    *,
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Namespace to watch (repeatable).")
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Kubeconfig file (default: in-cluster, then $KUBECONFIG).")
    ] = None,
    resync: Annotated[float, typer.Option(help="Seconds between full resyncs of every fleet.")] = 60.0,
    node_lost_grace: Annotated[
        float, typer.Option(help="Seconds a node may be NotReady before pods move.")
    ] = 60.0,
    workers: Annotated[int, typer.Option(help="Fleets reconciled concurrently.")] = 4,
    pod_event_delay: Annotated[float, typer.Option(help="Seconds pod events are batched per fleet.")] = 0.2,
    backoff_base: Annotated[
        float, typer.Option(help="First delay (s) before replacing a failed pod.")
    ] = 10.0,
    backoff_max: Annotated[
        float, typer.Option(help="Longest delay (s) before replacing a failed pod.")
    ] = 300.0,
    tolerate_kwok: Annotated[
        bool, typer.Option(help="Tolerate KWOK's fake-node taint (local clusters).")
    ] = False,
    leader_elect: Annotated[
        bool, typer.Option(help="Elect a leader through a Lease (for several replicas).")
    ] = True,
    lease_namespace: Annotated[str, typer.Option(help="Namespace of the leader-election Lease.")] = "default",
    lease_name: Annotated[str, typer.Option(help="Name of the leader-election Lease.")] = "flotilla-operator",
    lease_duration: Annotated[
        float, typer.Option(help="Seconds a Lease holder stays leader unrenewed.")
    ] = 15.0,
    identity: Annotated[
        str | None, typer.Option(help="Leader-election identity (default: host-pid).")
    ] = None,
    liveness: Annotated[
        str | None, typer.Option(help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus /metrics (flotilla_operator_*) on this port; 0 picks one."),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address the /metrics endpoint listens on.")] = "0.0.0.0",
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "INFO",
) -> None:
    """Run the InferenceFleet operator until interrupted."""
    import asyncio
    import logging

    from flotilla.operator.app import run_operator
    from flotilla.operator.config import BackoffConfig, LeaderConfig, OperatorConfig, RenderConfig

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = OperatorConfig(
        namespaces=namespace or [],
        kubeconfig=kubeconfig,
        resync_s=resync,
        node_lost_grace_s=node_lost_grace,
        workers=workers,
        pod_event_delay_s=pod_event_delay,
        render=RenderConfig(tolerate_kwok=tolerate_kwok),
        backoff=BackoffConfig(base_s=backoff_base, max_s=backoff_max),
        leader=LeaderConfig(
            enabled=leader_elect,
            namespace=lease_namespace,
            name=lease_name,
            identity=identity,
            lease_duration_s=lease_duration,
            renew_period_s=min(5.0, lease_duration / 3),
        ),
        liveness_endpoint=liveness,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    asyncio.run(run_operator(config))


@app.command("crd")
def crd() -> None:
    """Print the InferenceFleet CustomResourceDefinition."""
    from flotilla.api.crdgen import render

    typer.echo(render(), nl=False)


@app.command("rbac")
def rbac(
    namespace: Annotated[
        str, typer.Option(help="Namespace of the operator's ServiceAccount.")
    ] = "flotilla-system",
) -> None:
    """Print the operator's ServiceAccount, ClusterRole and bindings."""
    from flotilla.operator.rbac import render_rbac

    typer.echo(render_rbac(namespace), nl=False)


bench = typer.Typer(no_args_is_help=True)


@bench.command("run")
def bench_run(
    *,
    fleets: Annotated[str, typer.Option(help="Comma-separated fleet counts (8 replicas each).")] = "1,10,100",
    nodes: Annotated[int, typer.Option(help="KWOK GPU nodes (8 GPUs each).")] = 128,
    steady: Annotated[float, typer.Option(help="Seconds of steady state measured per scenario.")] = 60.0,
    resync: Annotated[float, typer.Option(help="Operator resync period (s).")] = 10.0,
    delays: Annotated[str, typer.Option(help="Comma-separated pod-event delays (s) compared.")] = "0,0.2",
    out: Annotated[Path, typer.Option(help="Where results.md/.json/.png go.")] = Path("benchmarks/operator"),
) -> None:
    """Time from apply to all Ready, and API requests, for fleets of 8 replicas on KWOK nodes."""
    import asyncio
    import logging
    import tempfile

    from flotilla.operator.bench import bench as run_bench
    from flotilla.operator.bench import write_report

    logging.basicConfig(level=logging.WARNING)
    counts = [int(c) for c in fleets.split(",") if c]
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-operator-") as workdir:
        delay_values = [float(d) for d in delays.split(",") if d]
        results, meta = asyncio.run(
            run_bench(
                counts, nodes, steady_s=steady, resync_s=resync, delays=delay_values, workdir=Path(workdir)
            )
        )
    write_report(results, meta, out)
    typer.echo((out / "results.md").read_text())
