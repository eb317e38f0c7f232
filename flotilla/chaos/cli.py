"""`flotilla bench chaos`: the faults-under-load benchmark (benchmarks/reliability/chaos.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def chaos(
    out: Annotated[Path, typer.Option(help="where chaos.md, chaos.png and chaos.json go")] = Path(
        "benchmarks/reliability"
    ),
    faults: Annotated[str, typer.Option(help="comma-separated fault names (default: all six)")] = "",
    rps: Annotated[float, typer.Option(help="mean arrival rate of the trace replay")] = 4.0,
    pre: Annotated[float, typer.Option(help="seconds of load before each fault")] = 15.0,
    post: Annotated[float, typer.Option(help="seconds of load after full recovery")] = 20.0,
) -> None:
    """Replay a trace through the router and inject each fault in turn; report losses and recovery."""
    import asyncio

    from flotilla.chaos.faults import FAULTS
    from flotilla.chaos.runner import run_chaos
    from flotilla.chaos.scenario import Phases
    from flotilla.chaos.workload import LoadSpec

    names = [f.strip() for f in faults.split(",") if f.strip()] or list(FAULTS)
    load = LoadSpec(rps=rps, max_input_tokens=1024, max_output_tokens=256)
    phases = Phases(pre_s=pre, post_s=post, recovery_timeout_s=120.0)
    try:
        asyncio.run(run_chaos(out, faults=names, load=load, phases=phases, say=typer.echo))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
