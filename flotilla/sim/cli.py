"""`flotilla bench sim`: the policy comparison in the fleet simulator, and its speed check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)

# Options every simulator benchmark takes, declared once so their help stays the same everywhere.
ProfileOption = Annotated[str | None, typer.Option(help="step-time profile name or JSON path")]
TtftSloOption = Annotated[float, typer.Option(help="SLO: time to first token, seconds")]
TpotSloOption = Annotated[float, typer.Option(help="SLO: time per output token, seconds")]
SeedOption = Annotated[int, typer.Option(help="seed of the router's random choices")]

QUICK_WORKLOADS = ("mooncake_conversation", "azure_conv")
# Short requests at fleet scale arrive hundreds per second: more of them keep a run past its start-up.
QUICK_REQUESTS = {"mooncake_conversation": 3000, "azure_conv": 12000}
FULL_WORKLOADS = ("mooncake_conversation", "mooncake_synthetic", "azure_conv", "castillo_llama")


def _profile(name: str | None, model: str) -> object:
    from flotilla.profiles import load_profile, shipped_profiles

    if name is not None:
        return load_profile(name)
    if "h100-llama3-8b" in shipped_profiles():
        return load_profile("h100-llama3-8b")
    # The enginesim's placeholder timing, so both engines agree when no measured profile exists.
    from flotilla.enginesim.app import FlagTiming

    return FlagTiming().profile(model)


def _progress(console: Console) -> Progress:
    """The bar every simulator benchmark shows: what runs now, how many of how many, time spent."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


@app.callback()
def compare(  # noqa: PLR0917 (typer options are parameters)
    ctx: typer.Context,
    quick: Annotated[
        bool, typer.Option(help="a few minutes: 2 workloads, 16 instances, 3 samples of 3000-12000 requests")
    ] = True,
    workload: Annotated[list[str] | None, typer.Option(help="workload names (repeatable)")] = None,
    instances: Annotated[int | None, typer.Option(help="engines in the fleet")] = None,
    requests: Annotated[
        int | None, typer.Option(help="requests per workload (traces repeat past their end)")
    ] = None,
    samples: Annotated[int | None, typer.Option(help="slices of each trace, averaged (spread shown)")] = None,
    loads: Annotated[str | None, typer.Option(help="comma-separated fractions of measured capacity")] = None,
    policy: Annotated[list[str] | None, typer.Option(help="scenario names to run (default: all)")] = None,
    profile: ProfileOption = None,
    max_model_len: Annotated[int | None, typer.Option(help="override the profile's max_model_len")] = None,
    ttft_slo: TtftSloOption = 2.0,
    tpot_slo: TpotSloOption = 0.1,
    seed: SeedOption = 0,
    out: Annotated[Path, typer.Option(help="folder for results.md, results.json and plots")] = Path(
        "benchmarks/sim"
    ),
) -> None:
    """Compare every routing policy and the oracle across loads, side by side in one run."""
    if ctx.invoked_subcommand is not None:
        return
    import json
    import sys

    from rich.console import Console

    from flotilla.profiles import StepTimeProfile
    from flotilla.sim import bench, workloads
    from flotilla.sim.metrics import Slo
    from flotilla.sim.scenario import default_lineup
    from flotilla.sim.simulator import SimConfig

    prof = _profile(profile, "sim")
    assert isinstance(prof, StepTimeProfile)
    limits = prof.limits
    if max_model_len is not None:
        limits = limits.model_copy(update={"max_model_len": max_model_len})
    names = workload or list(QUICK_WORKLOADS if quick else FULL_WORKLOADS)
    n_inst = instances or (16 if quick else 64)
    n_samples = samples or (3 if quick else 1)
    load_list = [
        float(x) for x in (loads or ("0.5,0.7,0.85,0.95" if quick else "0.5,0.6,0.7,0.8,0.9,0.95")).split(",")
    ]
    lineup = [s for s in default_lineup() if not policy or s.name in policy]
    console = Console()
    console.print(f"profile {prof.name}: {prof.source}")
    wls = []
    for name in names:
        trace = workloads.load(name, max_model_len=limits.max_model_len)
        n_req = requests or (QUICK_REQUESTS.get(name, 3000) if quick else 20000)
        wls += [workloads.sample(trace, n_req, i) for i in range(n_samples)]
        console.print(
            f"{trace.name}: {n_samples} x {n_req} requests, {trace.sessions} later turns and "
            f"{trace.clipped} clipped in the whole trace"
        )
    from flotilla.sim.predictions import has_text

    total = sum(
        len(load_list) * sum(s.predictor != "learned" or has_text(w.requests) for s in lineup) for w in wls
    )
    with _progress(console) as progress:
        task = progress.add_task("simulating", total=total)

        def tick(row: bench.Row) -> None:
            progress.update(task, advance=1, description=f"{row.workload} {row.load:.0%} {row.scenario}")

        rows = bench.sweep(
            wls,
            load_list,
            lineup,
            profile=prof,
            limits=limits,
            config=SimConfig(instances=n_inst, seed=seed),
            slo=Slo(ttft_s=ttft_slo, tpot_s=tpot_slo),
            on_run=tick,
        )
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Fleet simulator results\n\nProfile `{prof.name}` ({prof.hardware}); {n_inst} instances; "
        f"SLO TTFT < {ttft_slo:g} s and TPOT < {tpot_slo * 1000:g} ms. Each point averages {n_samples} "
        f"sample(s): consecutive slices of the trace, with router seeds {seed} to {seed + n_samples - 1}. "
        f"Command: `flotilla {' '.join(sys.argv[1:])}`.\n\n"
    )
    averaged = bench.average(rows)
    (out / "results.md").write_text(header + bench.markdown_table(averaged))
    (out / "results.json").write_text(json.dumps(bench.rows_as_dicts(rows), indent=1))
    plots = bench.plot(averaged, out) + bench.plot_loads(averaged, out)
    console.print(bench.markdown_table(averaged))
    console.print(f"wrote {out / 'results.md'}, {out / 'results.json'}, " + ", ".join(map(str, plots)))


@app.command("speed")
def speed(  # noqa: PLR0917
    instances: Annotated[int, typer.Option()] = 64,
    requests: Annotated[int, typer.Option()] = 20000,
    workload: Annotated[str, typer.Option()] = "mooncake_conversation",
    load: Annotated[float, typer.Option()] = 0.9,
    policy: Annotated[str, typer.Option()] = "least_request",
    profile: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Time one run (the issue's target: 64 instances x 20,000 requests in under a minute)."""
    import time

    from flotilla.profiles import StepTimeProfile
    from flotilla.sim import workloads
    from flotilla.sim.capacity import instance_capacity
    from flotilla.sim.scenario import default_lineup
    from flotilla.sim.simulator import SimConfig, simulate

    prof = _profile(profile, "sim")
    assert isinstance(prof, StepTimeProfile)
    w = workloads.extend_to(workloads.load(workload, max_model_len=prof.limits.max_model_len), requests)
    rate = load * instances * instance_capacity(w.requests, prof, prof.limits)
    reqs = workloads.at_rate(w.requests, rate)
    scenario = next(s for s in default_lineup() if s.name == policy)
    start = time.perf_counter()
    result = simulate(reqs, prof, prof.limits, scenario, SimConfig(instances=instances))
    wall = time.perf_counter() - start
    typer.echo(
        f"{w.name}: {len(reqs)} requests on {instances} instances at {load:.0%} of the profile-only "
        f"capacity estimate ({policy}): "
        f"{wall:.1f} s wall, {result.events} events, {result.decisions} decisions, "
        f"{int(result.instance_generated.sum())} tokens generated"
    )


@app.command("faults")
def faults(  # noqa: PLR0917
    workload: Annotated[str, typer.Option(help="workload name")] = "mooncake_conversation",
    instances: Annotated[int, typer.Option(help="engines in the fleet")] = 16,
    requests: Annotated[int, typer.Option(help="requests replayed")] = 3000,
    load: Annotated[float, typer.Option(help="offered load, fraction of the measured capacity")] = 0.7,
    policy: Annotated[str, typer.Option(help="routing policy")] = "least_request",
    slice_tokens: Annotated[int, typer.Option(help="S of the sliced runs")] = 256,
    profile: ProfileOption = None,
    during: Annotated[float, typer.Option(help="seconds after the fault counted as 'during'")] = 60.0,
    window: Annotated[float, typer.Option(help="recovery windows, seconds of arrivals")] = 20.0,
    tolerance: Annotated[float, typer.Option(help="recovered: p99 within this x the fault-free p99")] = 1.2,
    out: Annotated[Path, typer.Option(help="markdown report")] = Path("benchmarks/reliability/sim_faults.md"),
) -> None:
    """Kill engines, drain and re-add them mid-trace; whole requests vs slices (failover)."""
    import sys

    from rich.console import Console

    from flotilla.profiles import StepTimeProfile
    from flotilla.sim import faults_bench, workloads
    from flotilla.sim.capacity import measured_capacity
    from flotilla.sim.simulator import SimConfig
    from flotilla.sim.slicing_bench import rebalance_from_profile

    prof = _profile(profile, "sim")
    assert isinstance(prof, StepTimeProfile)
    w = workloads.sample(workloads.load(workload, max_model_len=prof.limits.max_model_len), requests, 0)
    capacity = measured_capacity(w.requests, prof, prof.limits, instances) * instances
    reqs = workloads.at_rate(w.requests, load * capacity)
    span = reqs[-1].arrival - reqs[0].arrival
    at, later = reqs[0].arrival + span / 3, reqs[0].arrival + 2 * span / 3
    fault_cases = faults_bench.cases(instances, at, later)
    console = Console()
    with _progress(console) as progress:
        task = progress.add_task("simulating", total=2 * (1 + len(fault_cases)))
        rows = faults_bench.run(
            reqs,
            profile=prof,
            limits=prof.limits,
            config=SimConfig(instances=instances),
            policy=policy,
            slice_tokens=slice_tokens,
            rebalance=rebalance_from_profile(prof, w.requests),
            fault_cases=fault_cases,
            during_s=during,
            window_s=window,
            tolerance=tolerance,
            on_run=lambda name: progress.update(task, advance=1, description=name),
        )
    table = faults_bench.markdown(rows, during_s=during)
    header = (
        f"Profile `{prof.name}`; {w.name}, {len(reqs)} requests over {span:.0f} s at {load:.0%} of the "
        f"measured capacity ({capacity:.2f} req/s); {instances} instances, `{policy}`; faults at "
        f"t = {at:.0f} s (scale-up at t = {later:.0f} s); recovery: {window:g} s windows of arrivals, p99 "
        f"within {tolerance:g}x the fault-free run's. Command: `flotilla {' '.join(sys.argv[1:])}`.\n\n"
    )
    console.print(header + table)
    if out.suffix == ".md":
        text = out.read_text() if out.exists() else ""
        marker = "<!-- results -->"
        if marker in text:
            text = text[: text.index(marker) + len(marker)] + "\n\n" + header + table
        else:
            text = header + table
        out.write_text(text)
        console.print(f"wrote {out}")
