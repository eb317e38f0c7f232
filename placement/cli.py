"""`flotilla placement` sub-commands (placeholder until its issue lands)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run() -> None:
    """Not implemented yet."""
    typer.echo("flotilla placement: not implemented yet", err=True)
    raise typer.Exit(2)


bench = typer.Typer(no_args_is_help=True)


@bench.command("run")
def bench_run() -> None:
    """Not implemented yet."""
    typer.echo("flotilla bench placement: not implemented yet", err=True)
    raise typer.Exit(2)
