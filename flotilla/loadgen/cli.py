"""`flotilla bench live`: routers compared on live engine processes (see benchmarks/live/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flotilla.localcluster.engines import EngineKind

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


@app.callback()
def live(  # noqa: PLR0917 (typer options are parameters)
    ctx: typer.Context,
    workload: Annotated[
        list[str] | None,
        typer.Option(help="a trace (default: mooncake_conversation and azure_conv) or poisson; repeatable"),
    ] = None,
    duration: Annotated[float, typer.Option(help="seconds of arrivals per arm run")] = 30.0,
    skip: Annotated[float, typer.Option(help="seconds of the trace skipped before the window")] = 0.0,
    rate: Annotated[
        float | None, typer.Option(help="mean requests/s (rescales a trace; required for poisson)")
    ] = None,
    prompt_tokens: Annotated[int, typer.Option(help="poisson: prompt length")] = 512,
    output_tokens: Annotated[int, typer.Option(help="poisson: output length")] = 128,
    arm: Annotated[
        list[str] | None, typer.Option(help="arm names to run (default: all; see --list-arms)")
    ] = None,
    slice_tokens: Annotated[
        str, typer.Option(help="comma-separated S values for the slicing arms")
    ] = "64,256",
    lineup: Annotated[
        str,
        typer.Option(
            help="default (routers and policies) or replicas (1, 2, 4 router replicas, shared state off/on)"
        ),
    ] = "default",
    replica_policy: Annotated[str, typer.Option(help="the replicas lineup's policy")] = "least_request",
    list_arms: Annotated[bool, typer.Option(help="print the arm names and exit")] = False,
    baseline: Annotated[str, typer.Option(help="the arm the ratios divide by")] = "round_robin",
    rounds: Annotated[int, typer.Option(help="times every arm runs (order rotated each round)")] = 2,
    engine: Annotated[
        EngineKind,
        typer.Option(
            help="what the engines are: vllm (real vLLM on the CPU, the local benchmark model, one core "
            "each) or enginesim (flotilla's simulated engine, timed by --profile)"
        ),
    ] = EngineKind.enginesim,
    engines: Annotated[int, typer.Option(help="engine processes")] = 4,
    profile: Annotated[str, typer.Option(help="enginesim: step-time profile")] = "h100-llama3-8b",
    time_scale: Annotated[float, typer.Option(help="enginesim: multiplies the profile's step times")] = 2.0,
    max_num_seqs: Annotated[int, typer.Option(help="engine batch limit")] = 16,
    ttft_slo: Annotated[float, typer.Option(help="SLO: time to first token, seconds")] = 2.0,
    tpot_slo: Annotated[float, typer.Option(help="SLO: time per output token, seconds")] = 0.1,
    drain_timeout: Annotated[float, typer.Option(help="seconds to wait for stragglers per run")] = 120.0,
    seed: Annotated[int, typer.Option(help="salt of the prompts and seed of the routers")] = 0,
    out: Annotated[Path, typer.Option(help="folder for results.json, results.md, results.png")] = Path(
        "benchmarks/live"
    ),
) -> None:
    """Replay a trace through each router in front of the same engines; report ratios per metric."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio
    import signal

    from rich.console import Console

    from flotilla.loadgen.live import EngineSettings, LiveConfig, LiveResults, WorkloadSpec, run_live
    from flotilla.loadgen.report import write_report
    from flotilla.loadgen.summary import Slo
    from flotilla.loadgen.targets import default_arms, replica_arms

    if lineup not in ("default", "replicas"):
        raise typer.BadParameter(f"unknown lineup {lineup!r}: default or replicas")
    every = (
        replica_arms()
        if lineup == "replicas"
        else default_arms([int(s) for s in slice_tokens.split(",") if s.strip()])
    )
    if list_arms:
        for a in every:
            typer.echo(a.name)
        return
    chosen = [a for a in every if arm is None or a.name in arm]
    unknown = set(arm or ()) - {a.name for a in every}
    if unknown:
        raise typer.BadParameter(f"unknown arms {sorted(unknown)}; see --list-arms")
    specs = [
        WorkloadSpec(
            name=w,
            duration_s=duration,
            skip_s=skip,
            rate=rate,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
        )
        for w in (workload or ["mooncake_conversation", "azure_conv"])
    ]
    config = LiveConfig(
        workloads=specs,
        arms=chosen,
        engines=EngineSettings(
            kind=engine.value,
            count=engines,
            profile=profile,
            time_scale=time_scale,
            max_num_seqs=max_num_seqs,
        ),
        rounds=rounds,
        baseline=baseline,
        slo=Slo(ttft_s=ttft_slo, tpot_s=tpot_slo),
        drain_timeout_s=drain_timeout,
        seed=seed,
    )
    console = Console()
    out.mkdir(parents=True, exist_ok=True)

    def save(results: LiveResults) -> None:
        (out / "results.json").write_text(json.dumps(results.model_dump(mode="json"), indent=1) + "\n")

    async def main() -> LiveResults:
        # SIGTERM cancels the run like Ctrl-C does, so engines and routers are stopped, not orphaned.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_live(config, lambda line: console.print(line, highlight=False), save)

    results = asyncio.run(main())
    save(results)
    write_report(results, out)
    console.print(f"wrote {out / 'results.md'}")


@app.command("report")
def report(
    results_json: Annotated[Path, typer.Argument(help="results.json of a live run")] = Path(
        "benchmarks/live/results.json"
    ),
) -> None:
    """Re-render results.md and results.png next to a results.json."""
    from flotilla.loadgen.live import LiveResults
    from flotilla.loadgen.report import write_report

    results = LiveResults.model_validate_json(results_json.read_text())
    write_report(results, results_json.parent)
    typer.echo(f"wrote {results_json.parent / 'results.md'}")
