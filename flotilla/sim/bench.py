"""The policy comparison: every scenario x every load x every workload, in one run.

Each workload is loaded once; for each load its arrival times are rescaled to that fraction of the
fleet's capacity as measured in the simulator (`flotilla.sim.capacity`), and every scenario
replays exactly the same requests with the same seed, so differences between rows are the
policies' alone. Results are a markdown table (absolute numbers, and ratios to round robin) and
latency-vs-load plots.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flotilla.profiles import EngineLimits, StepTimeProfile
from flotilla.sim.capacity import instance_capacity, measured_capacity
from flotilla.sim.metrics import Slo, Summary, summarize
from flotilla.sim.predictions import has_text, learned_lengths
from flotilla.sim.scenario import Scenario
from flotilla.sim.simulator import SimConfig, simulate
from flotilla.sim.workloads import Workload, at_rate

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Row:
    workload: str
    load: float
    scenario: str
    rate_rps: float
    """Offered rate: `load` x the fleet's measured capacity."""
    capacity_rps: float
    """The fleet's measured capacity on this workload (`capacity.measured_capacity`)."""
    analytic_rps: float
    """The profile-only estimate of the same (`capacity.instance_capacity`), as a cross-check."""
    wall_s: float
    summary: Summary
    load_times: np.ndarray = field(repr=False, compare=False)
    """Scrape times, and the requests on each instance at each (for the load-over-time plot)."""
    loads: np.ndarray = field(repr=False, compare=False)
    sample: int = 0
    """Which slice of the trace (and router seed offset) this run replayed."""
    samples: int = 1
    """How many samples an averaged row stands for, and the spread of their mean e2e latency."""
    e2e_mean_range: tuple[float, float] | None = None


def sweep(
    workloads: Sequence[Workload],
    loads: Sequence[float],
    lineup: Sequence[Scenario],
    *,
    profile: StepTimeProfile,
    limits: EngineLimits,
    config: SimConfig,
    slo: Slo,
    on_run: Callable[[Row], None] = lambda row: None,
) -> list[Row]:
    """Every usable scenario (learned predictors need prompt text) on every workload and load."""
    rows: list[Row] = []
    for w in workloads:
        analytic = instance_capacity(w.requests, profile, limits) * config.instances
        capacity = measured_capacity(w.requests, profile, limits, config.instances) * config.instances
        # Predictions do not depend on the load: the learned ones (costly) are made once per workload.
        learned: dict[str, list[float]] = {}
        usable = [sc for sc in lineup if sc.predictor != "learned" or has_text(w.requests)]
        for load in loads:
            requests = at_rate(w.requests, load * capacity)
            run_config = config.model_copy(update={"seed": config.seed + w.sample})
            for sc in usable:
                start = time.perf_counter()
                predicted = None
                if sc.predictor == "learned":
                    if sc.artifact not in learned:
                        learned[sc.artifact] = learned_lengths(w.requests, sc.artifact)
                    predicted = learned[sc.artifact]
                result = simulate(requests, profile, limits, sc, run_config, predicted=predicted)
                row = Row(
                    w.name,
                    load,
                    sc.name,
                    load * capacity,
                    capacity,
                    analytic,
                    time.perf_counter() - start,
                    summarize(result, slo),
                    result.load_times,
                    result.loads,
                    sample=w.sample,
                )
                rows.append(row)
                on_run(row)
    return rows


def average(rows: Sequence[Row]) -> list[Row]:
    """One row per (workload, load, scenario): every metric averaged over the samples."""
    groups: dict[tuple[str, float, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.workload, r.load, r.scenario), []).append(r)
    out: list[Row] = []
    for group in groups.values():
        first = group[0]
        means = {
            f.name: type(getattr(first.summary, f.name))(np.mean([getattr(r.summary, f.name) for r in group]))
            for f in fields(Summary)
        }
        e2e = [r.summary.e2e_mean for r in group]
        out.append(
            replace(
                first,
                rate_rps=float(np.mean([r.rate_rps for r in group])),
                capacity_rps=float(np.mean([r.capacity_rps for r in group])),
                analytic_rps=float(np.mean([r.analytic_rps for r in group])),
                wall_s=float(sum(r.wall_s for r in group)),
                summary=Summary(**means),
                samples=len(group),
                e2e_mean_range=(min(e2e), max(e2e)),
            )
        )
    return out


_COLUMNS = (
    ("e2e mean s", "e2e_mean", "{:.2f}"),
    ("e2e p99 s", "e2e_p99", "{:.2f}"),
    ("TTFT mean s", "ttft_mean", "{:.3f}"),
    ("TTFT p99 s", "ttft_p99", "{:.2f}"),
    ("TPOT mean ms", "tpot_mean", "{:.1f}"),
    ("TPOT p99 ms", "tpot_p99", "{:.1f}"),
    ("tput req/s", "throughput_rps", "{:.2f}"),
    ("goodput req/s", "goodput_rps", "{:.2f}"),
    ("SLO met", "slo_attainment", "{:.1%}"),
    ("imbalance CV", "imbalance_cv", "{:.2f}"),
    ("preempt", "preemptions", "{:d}"),
    ("prefix hit", "prefix_hit_rate", "{:.1%}"),
)


def _cell(summary: Summary, key: str, fmt: str) -> str:
    value = getattr(summary, key)
    if key.startswith("tpot"):
        value *= 1000.0
    return fmt.format(value)


def markdown_table(rows: Sequence[Row], baseline: str = "round_robin") -> str:
    """One table per workload (rows as given: pass `average(rows)` for several samples); the last
    columns are mean e2e latency and goodput as ratios to the baseline at the same load."""
    out: list[str] = []
    for workload in dict.fromkeys(r.workload for r in rows):
        mine = [r for r in rows if r.workload == workload]
        out.append(f"### {workload}\n")
        out.append(
            f"Fleet capacity measured in the simulator: {mine[0].capacity_rps:.2f} req/s "
            f"(profile-only estimate {mine[0].analytic_rps:.2f}); load = offered rate / measured capacity.\n"
        )
        head = [
            "load",
            "offered req/s",
            "policy",
            "samples",
            *(c[0] for c in _COLUMNS),
            "e2e mean range s",
            "e2e / RR",
            "goodput / RR",
            "sim wall s",
        ]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in mine:
            base = next((b for b in mine if b.load == r.load and b.scenario == baseline), None)
            e2e_ratio = f"{r.summary.e2e_mean / base.summary.e2e_mean:.2f}" if base else "-"
            good_ratio = (
                f"{r.summary.goodput_rps / base.summary.goodput_rps:.2f}"
                if base and base.summary.goodput_rps > 0
                else "-"
            )
            cells = [
                f"{r.load:.0%}",
                f"{r.rate_rps:.2f}",
                r.scenario,
                str(r.samples),
                *(_cell(r.summary, k, f) for _, k, f in _COLUMNS),
                f"{r.e2e_mean_range[0]:.2f}-{r.e2e_mean_range[1]:.2f}" if r.e2e_mean_range else "-",
            ]
            out.append("| " + " | ".join([*cells, e2e_ratio, good_ratio, f"{r.wall_s:.1f}"]) + " |")
        out.append("")
    return "\n".join(out)


def save_figure(fig: Figure, path: Path, *, dpi: int = 100) -> Path:
    """Write the figure and free it (pyplot keeps every open figure alive until closed)."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot(rows: Sequence[Row], folder: Path) -> list[Path]:
    """One PNG per workload: mean and p99 e2e latency, p99 TTFT and goodput against load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    panels = (
        ("e2e_mean", "mean end-to-end latency (s)"),
        ("e2e_p99", "p99 end-to-end latency (s)"),
        ("ttft_p99", "p99 TTFT (s)"),
        ("goodput_rps", "goodput under SLO (req/s)"),
    )
    for workload in dict.fromkeys(r.workload for r in rows):
        mine = [r for r in rows if r.workload == workload]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
        for ax, (key, label) in zip(axes, panels, strict=True):
            for scenario in dict.fromkeys(r.scenario for r in mine):
                pts = sorted((r.load, getattr(r.summary, key)) for r in mine if r.scenario == scenario)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=scenario)
            ax.set_xlabel("offered load (fraction of measured capacity)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if key != "goodput_rps":
                ax.set_yscale("log")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"fleet simulator: {workload}")
        fig.tight_layout()
        paths.append(save_figure(fig, folder / f"{workload}.png", dpi=110))
    return paths


def plot_loads(rows: Sequence[Row], folder: Path) -> list[Path]:
    """Per workload, at its highest load: requests on each instance over time, one panel per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    for workload in dict.fromkeys(r.workload for r in rows):
        top = max(r.load for r in rows if r.workload == workload)
        mine = [r for r in rows if r.workload == workload and r.load == top]
        fig, axes = plt.subplots(1, len(mine), figsize=(4 * len(mine), 3.5), sharey=True, squeeze=False)
        for ax, r in zip(axes[0], mine, strict=True):
            ax.plot(r.load_times, r.loads, linewidth=0.5)
            ax.set_title(f"{r.scenario} (CV {r.summary.imbalance_cv:.2f})", fontsize=9)
            ax.set_xlabel("simulated time (s)")
        axes[0][0].set_ylabel("requests on each instance")
        fig.suptitle(f"{workload} at {top:.0%} load: per-instance load over time")
        fig.tight_layout()
        paths.append(save_figure(fig, folder / f"{workload}-instance-load.png"))
    return paths


def rows_as_dicts(rows: Sequence[Row]) -> list[dict[str, object]]:
    """The rows without their time series, for results.json."""
    return [{k: v for k, v in asdict(r).items() if k not in ("load_times", "loads")} for r in rows]
