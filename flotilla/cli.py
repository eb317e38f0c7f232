"""The one `flotilla` command line; each component contributes its own sub-commands.

Component CLIs import their heavy dependencies (kopf, OR-Tools, torch) inside the commands, so that
`flotilla --help` stays fast and works without optional extras.
"""

from __future__ import annotations

import typer

from flotilla import __version__
from flotilla.chaos import cli as chaos_cli
from flotilla.loadgen import cli as live_cli
from flotilla.localcluster import cli as cluster_cli
from flotilla.localcluster import demo_cli
from flotilla.operator import cli as operator_cli
from flotilla.placement import cli as placement_cli
from flotilla.predictor_training import cli as predictor_cli
from flotilla.router import cli as router_cli
from flotilla.sim import cli as sim_cli
from flotilla.sim import slicing_cli


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flotilla {__version__}")
        raise typer.Exit


def build_app() -> typer.Typer:
    app = typer.Typer(
        help="flotilla: operator, GPU placement and load-aware routing for LLM fleets.",
        no_args_is_help=True,
        add_completion=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
    ) -> None:
        """Run `flotilla COMMAND --help` for a command's options."""

    app.add_typer(operator_cli.app, name="operator", help="Run the InferenceFleet operator (Kopf).")
    app.add_typer(placement_cli.app, name="placement", help="Run the CP-SAT placement scheduler.")
    app.add_typer(router_cli.app, name="router", help="Run the OpenAI-compatible router.")
    app.add_typer(cluster_cli.app, name="cluster", help="Start or stop the local control plane.")
    app.add_typer(predictor_cli.app, name="predictor", help="Train, evaluate, refit length predictors.")

    bench = typer.Typer(help="Reproduce a benchmark in benchmarks/.", no_args_is_help=True)
    bench.add_typer(placement_cli.bench, name="placement")
    bench.add_typer(operator_cli.bench, name="operator", help="Operator convergence time and API cost.")
    bench.add_typer(sim_cli.app, name="sim", help="Routing policies compared in the fleet simulator.")
    bench.add_typer(slicing_cli.app, name="slicing", help="Slice-level scheduling in the fleet simulator.")
    bench.add_typer(live_cli.app, name="live", help="Routers compared on live engine processes.")
    bench.command("chaos", help="Faults under load on the local control plane.")(chaos_cli.chaos)
    app.add_typer(bench, name="bench")

    app.command("demo")(demo_cli.demo)

    return app


def main() -> None:
    build_app()()
