"""`flotilla placement ...` and `flotilla bench placement`.

OR-Tools, numpy and matplotlib are imported inside the commands so that `flotilla --help` stays fast.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from flotilla.placement.kube.loop import LoopConfig

DEFAULT_OUT = Path("benchmarks/placement")

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run(
    *,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Kubeconfig (default: in-cluster, then ~/.kube)")
    ] = None,
    budget: float = typer.Option(1.0, help="Solver time budget per cycle in seconds."),
    batch_window: float = typer.Option(0.25, help="Seconds to batch arrivals after a change."),
    resync: float = typer.Option(5.0, help="Retry pending pods at least this often (seconds)."),
    workers: int = typer.Option(0, help="CP-SAT workers (0: all cores)."),
    metrics_port: int = typer.Option(
        0, help="Serve Prometheus /metrics and /healthz on this port (0: do not serve)."
    ),
    metrics_host: str = typer.Option("0.0.0.0", help="Address the metrics server listens on."),
) -> None:
    """The in-cluster scheduler: place pods with schedulerName flotilla, bind, evict, explain."""
    import asyncio
    import logging

    from flotilla.placement.kube.loop import LoopConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = LoopConfig(budget_s=budget, batch_window_s=batch_window, resync_s=resync, workers=workers)
    asyncio.run(_serve(config, kubeconfig, metrics_host, metrics_port))


def health_max_age_s(config: LoopConfig) -> float:
    """How long without an ended cycle before /healthz fails: a few resyncs and solves, never < 60 s."""
    return max(60.0, 3 * (config.resync_s + config.batch_window_s + 2 * config.budget_s))


async def _serve(config: LoopConfig, kubeconfig: Path | None, metrics_host: str, metrics_port: int) -> None:
    import asyncio
    import contextlib
    import signal

    from kubernetes_asyncio import client
    from prometheus_client import CollectorRegistry

    from flotilla.kube.config import load_configuration
    from flotilla.metricsserver import serve_metrics
    from flotilla.placement.kube.clusterapi import KubeClusterApi
    from flotilla.placement.kube.loop import PlacementLoop
    from flotilla.placement.kube.telemetry import PlacementMetrics

    api_config = await load_configuration(kubeconfig)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    metrics = PlacementMetrics(CollectorRegistry())
    max_age = health_max_age_s(config)
    async with contextlib.AsyncExitStack() as stack:
        if metrics_port:
            # The solve runs in a worker thread (asyncio.to_thread): a long solve never delays a probe.
            await stack.enter_async_context(
                serve_metrics(
                    metrics.registry,
                    metrics_host,
                    metrics_port,
                    healthy=lambda: metrics.healthy(max_age),
                    unhealthy_text="no cycle ended recently\n",
                )
            )
        api = await stack.enter_async_context(client.ApiClient(configuration=api_config))
        await PlacementLoop(KubeClusterApi(api, config.scheduler_name), config, metrics=metrics).run(stop)


@app.command("solve")
def solve_scenario(
    *,
    nodes: int = typer.Option(64, help="Nodes of 8 GPUs."),
    tiers: int = typer.Option(3, help="Priority tiers (1 to 4)."),
    utilisation: float = typer.Option(1.0, help="GPU demand over GPU capacity."),
    bound_share: float = typer.Option(0.5, help="Share of arrivals already placed by the default."),
    constraints: bool = typer.Option(False, help="Gangs, spread, GPU products, tainted pool."),
    seed: int = typer.Option(0),
    budget: float = typer.Option(1.0, help="Solver time budget in seconds."),
    workers: int = typer.Option(0, help="CP-SAT workers (0: all cores)."),
) -> None:
    """Generate one seeded scenario and compare the solver with kube-scheduler and best-fit."""
    from rich.console import Console
    from rich.table import Table

    from flotilla.placement.bench.scenarios import ScenarioSpec, generate
    from flotilla.placement.cpsat.solver import solve
    from flotilla.placement.heuristics.bestfit import schedule_best_fit
    from flotilla.placement.heuristics.kubedefault import schedule_default
    from flotilla.placement.rules.metrics import evaluate

    spec = ScenarioSpec("cli", nodes, tiers, utilisation, bound_share, seed, constraints=constraints)
    snap = generate(spec)
    table = Table(title=f"{nodes} nodes, {len(snap.bound)} running, {len(snap.pending)} pending")
    for column in ("policy", "status", "placed per tier (high to low)", "evict", "move", "stranded", "time"):
        table.add_column(column)
    plans = [
        solve(snap, budget, workers=workers),
        schedule_default(snap, seed=seed),
        schedule_best_fit(snap),
    ]
    for plan in plans:
        m = evaluate(snap, plan)
        per_tier = " / ".join(str(m.placed_by_tier.get(t, 0)) for t in snap.all_tiers())
        table.add_row(
            plan.approach,
            str(plan.status),
            per_tier,
            str(m.evictions),
            str(m.moves),
            str(m.stranded_gpus),
            f"{plan.seconds:.3f} s",
        )
    Console().print(table)
    for stage in plans[0].stages:
        typer.echo(
            f"  {stage.name}: {stage.objective:g} (bound {stage.bound:g}) "
            f"{stage.status} in {stage.seconds:.3f} s"
        )
    for note in plans[0].notes:
        typer.echo(f"  note: {note}")


bench = typer.Typer(invoke_without_command=True)


@bench.callback()
def bench_run(
    *,
    full: bool = typer.Option(False, "--full", help="The full sweep (4x the seeds, 1,000 nodes)."),
    budget: float = typer.Option(1.0, help="Solver time budget per scenario in seconds."),
    workers: int = typer.Option(0, help="CP-SAT workers (0: all cores)."),
    seed: int = typer.Option(0, help="Seed of the scenario sweep."),
    out: Annotated[Path, typer.Option(help="Where tables, raw results and the plot go.")] = DEFAULT_OUT,
    max_minutes: float = typer.Option(20.0, help="Stop starting new scenarios after this long."),
    kwok: int = typer.Option(6, help="Replay this many small scenarios on the real kube-scheduler (KWOK)."),
) -> None:
    """Seeded scenarios like the paper's: our solver, kube-scheduler's default and best-fit, side by side."""
    import tempfile

    from rich.progress import Progress

    from flotilla.localcluster.binaries import BinariesMissing
    from flotilla.placement.bench.report import (
        approach_table,
        family_table,
        plot,
        policy_table,
        real_scheduler_table,
    )
    from flotilla.placement.bench.runner import (
        QUICK,
        full_families,
        replay_on_kwok,
        run_scenario,
        scenario_specs,
    )

    families = full_families() if full else QUICK
    specs = list(scenario_specs(families, seed))
    workers = workers or (os.cpu_count() or 1)
    rows = []
    started = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task("placement scenarios", total=len(specs))
        for family, spec in specs:
            if time.perf_counter() - started > max_minutes * 60:
                break
            progress.update(task, description=f"{family.name} {spec.nodes} nodes")
            rows.append(run_scenario(family, spec, budget, workers))
            progress.advance(task)
    replayed = 0
    if kwok:
        # alternate families and sizes: paper 16, constraints 16, paper 64, constraints 64, ...
        pools = [
            [s for f, s in specs if f.name == family and s.nodes == size]
            for size in (16, 64)
            for family in ("paper", "constraints")
        ]
        chosen = [s for group in zip(*pools, strict=False) for s in group][:kwok]
        typer.echo(f"replaying {len(chosen)} scenarios on the real kube-scheduler (KWOK)...")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                replayed = replay_on_kwok(rows, chosen, Path(tmp))
        except BinariesMissing as exc:
            typer.echo(f"skipped the real kube-scheduler: {exc}", err=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([r.to_json() for r in rows], indent=1))
    plot(rows, out / "placement.png")
    header = (
        f"Generated by `flotilla bench placement{' --full' if full else ''}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {len(rows)} of {len(specs)} scenarios, "
        f"solver budget {budget:g} s, {workers} CP-SAT workers, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), machine shared with other jobs "
        f"(load average {os.getloadavg()[0]:.1f} at the end): times are indicative, "
        "comparisons are per scenario."
    )
    text = "\n\n".join(
        [
            "# Placement benchmark results",
            header,
            "## Headline, per scenario family",
            family_table(rows),
            "## Per policy",
            policy_table(rows),
            "## Approaches: node classes vs one class per node",
            approach_table(rows),
            f"## The real kube-scheduler (v1.35, local control plane, KWOK nodes): {replayed} scenarios",
            real_scheduler_table(rows),
            "![placement](placement.png)",
        ]
    )
    (out / "results.md").write_text(text + "\n")
    typer.echo(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'placement.png'}")
