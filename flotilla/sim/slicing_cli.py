"""`flotilla bench slicing`: slice-level scheduling in the fleet simulator (issue 7's benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flotilla.sim.cli import ProfileOption, SeedOption, TpotSloOption, TtftSloOption

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)

REQUESTS = {"mooncake_conversation": 1500, "azure_conv": 4000}


@app.callback()
def slicing(  # noqa: PLR0917 (typer options are parameters)
    workload: Annotated[list[str] | None, typer.Option(help="workload names (repeatable)")] = None,
    instances: Annotated[int, typer.Option(help="engines in the fleet")] = 16,
    requests: Annotated[int | None, typer.Option(help="requests per workload")] = None,
    sweep_load: Annotated[
        float, typer.Option(help="load of the S sweep (fraction of measured capacity)")
    ] = 0.85,
    slice_tokens: Annotated[
        str, typer.Option(help="comma-separated S values of the sweep")
    ] = "32,64,128,256,512",
    loads: Annotated[str, typer.Option(help="comma-separated loads of the on/off grid")] = "0.7,0.85,0.95",
    profile: ProfileOption = None,
    ttft_slo: TtftSloOption = 2.0,
    tpot_slo: TpotSloOption = 0.1,
    seed: SeedOption = 0,
    out: Annotated[Path, typer.Option(help="folder for results.md, results.json and plots")] = Path(
        "benchmarks/slicing"
    ),
) -> None:
    """Sweep the slice length, then compare whole requests with slices for every policy and load."""
    import json
    import sys

    from rich.console import Console

    from flotilla.profiles import StepTimeProfile
    from flotilla.sim import slicing_bench, workloads
    from flotilla.sim.cli import _profile, _progress
    from flotilla.sim.metrics import Slo
    from flotilla.sim.simulator import SimConfig

    prof = _profile(profile, "sim")
    assert isinstance(prof, StepTimeProfile)
    names = workload or list(REQUESTS)
    sweep_s = [int(x) for x in slice_tokens.split(",")]
    grid_loads = [float(x) for x in loads.split(",")]
    console = Console()
    console.print(f"profile {prof.name}: {prof.source}")
    wls = []
    for name in names:
        trace = workloads.load(name, max_model_len=prof.limits.max_model_len)
        wls.append(workloads.sample(trace, requests or REQUESTS.get(name, 2000), 0))
    per_workload = slicing_bench.runs_per_workload(len(sweep_s), len(grid_loads))
    with _progress(console) as progress:
        task = progress.add_task("simulating", total=per_workload * len(wls))

        def tick(row: slicing_bench.SliceRow) -> None:
            s = row.slice_tokens or "off"
            progress.update(task, advance=1, description=f"{row.workload} {row.load:.0%} {row.policy} S={s}")

        rows, best = slicing_bench.run(
            wls,
            sweep_load=sweep_load,
            sweep_s=sweep_s,
            grid_loads=grid_loads,
            profile=prof,
            limits=prof.limits,
            config=SimConfig(instances=instances, seed=seed),
            slo=Slo(ttft_s=ttft_slo, tpot_s=tpot_slo),
            on_run=tick,
        )
    out.mkdir(parents=True, exist_ok=True)
    wall = sum(r.wall_s for r in rows)
    header = (
        f"# Slice-level scheduling in the fleet simulator\n\nProfile `{prof.name}` ({prof.hardware}); "
        f"{instances} instances; "
        + ", ".join(f"{w.name} {len(w.requests)} requests" for w in wls)
        + f"; SLO TTFT < {ttft_slo:g} s and TPOT < {tpot_slo * 1000:g} ms; one sample, router seed {seed}; "
        f"{len(rows)} runs, {wall:.0f} s of simulation. Command: `flotilla {' '.join(sys.argv[1:])}`.\n\n"
    )
    text = slicing_bench.markdown(rows, best)
    (out / "results.md").write_text(header + text)
    (out / "results.json").write_text(json.dumps(slicing_bench.rows_as_dicts(rows), indent=1))
    plots = slicing_bench.plot(rows, out)
    console.print(text)
    console.print(f"wrote {out / 'results.md'}, {out / 'results.json'}, " + ", ".join(map(str, plots)))
