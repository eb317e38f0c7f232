"""The slicing benchmark: slice length S swept, then slicing on/off for every policy, in one run.

Two questions, on the same requests with the same seed (so differences are the set-up's alone):
1. Which S? At one load, S in a list (and off) for a load-aware and a prefix-aware policy: short
   slices rebalance often but every move re-prefills the context, and even a continuation that
   stays recomputes its last partial block and waits again for admission; long slices approach
   whole requests. The S with the best goodput is kept.
2. For whom? Every policy of the lineup at several loads, whole requests against slices of that S.

The between-slice placement (`flotilla.router.slicing.decisions.RebalanceParams`) is priced from the step-time
profile rather than left at the router's defaults, as an operator would configure it: a decode step
costs about `decode_seq_s + compute_token_s + kv_token_s x context` more per sequence in the batch,
and a re-prefilled token `prefill_token_s + compute_token_s + prefill_attn_s x context`, with
context the workload's mean prompt plus half its mean output. The router's defaults (0.05 ms for
both) are run too, at the sweep's load, for comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flotilla.profiles import EngineLimits, StepTimeProfile
from flotilla.sim.bench import save_figure
from flotilla.sim.capacity import measured_capacity
from flotilla.sim.metrics import Slo, Summary, summarize
from flotilla.sim.request import SimRequest
from flotilla.sim.scenario import Scenario, default_lineup
from flotilla.sim.simulator import RunResult, SimConfig, simulate
from flotilla.sim.workloads import Workload, at_rate

SWEEP_POLICIES = ("least_request", "prefix_affinity")
KV_LIMIT = 0.9
"""The router's memory-aware admission limit tried in the sweep (`flotilla.router.memory`)."""


@dataclass(frozen=True)
class SliceRow:
    part: str
    """"sweep" (S varied) or "grid" (policies x loads, on/off)."""
    workload: str
    load: float
    policy: str
    slice_tokens: int
    rebalance: str
    """"profile" or "router defaults" (see the module doc)."""
    summary: Summary
    slices_per_request: float
    moved_share: float
    """Continuation slices that ran elsewhere than the slice before, over all continuations."""
    prefill_tokens: int
    """Prompt tokens the engines computed (re-prefills and recomputes included, cache hits not)."""
    wall_s: float


def rebalance_from_profile(profile: StepTimeProfile, requests: Sequence[SimRequest]) -> dict[str, float]:
    """RebalanceParams priced by the profile at the workload's mean context (module doc)."""
    c = profile.coefficients
    context = float(np.mean([r.prompt_tokens + r.output_tokens / 2 for r in requests]))
    return {
        "decode_seq_ms": 1000.0 * (c.decode_seq_s + c.compute_token_s + c.kv_token_s * context),
        "prefill_token_ms": 1000.0 * (c.prefill_token_s + c.compute_token_s + c.prefill_attn_s * context),
    }


def runs_per_workload(slice_lengths: int, loads: int) -> int:
    """Runs `run` makes for one workload (for a progress bar)."""
    return (len(SWEEP_POLICIES) + 1) * (1 + slice_lengths) + slice_lengths + 2 * loads * len(lineup())


def lineup() -> list[Scenario]:
    """The simulator's lineup without the learned predictor (the traces have no prompt text)."""
    return [s for s in default_lineup() if s.predictor != "learned"]


def _row(
    *, part: str, w: Workload, load: float, sc: Scenario, rebalance: str, r: RunResult, slo: Slo, wall: float
) -> SliceRow:
    continuations = int(r.slices.sum() - len(r.slices))
    return SliceRow(
        part=part,
        workload=w.name,
        load=load,
        policy=sc.name,
        slice_tokens=sc.slice_tokens,
        rebalance=rebalance,
        summary=summarize(r, slo),
        slices_per_request=float(r.slices.mean()),
        moved_share=float(r.moves.sum()) / continuations if continuations else 0.0,
        prefill_tokens=int(r.instance_prefill_tokens.sum()),
        wall_s=wall,
    )


def run(
    workloads: Sequence[Workload],
    *,
    sweep_load: float,
    sweep_s: Sequence[int],
    grid_loads: Sequence[float],
    profile: StepTimeProfile,
    limits: EngineLimits,
    config: SimConfig,
    slo: Slo,
    on_run: Callable[[SliceRow], None] = lambda row: None,
) -> tuple[list[SliceRow], dict[str, int]]:
    """All rows, and the best S per workload (by mean goodput over the sweep's policies)."""
    rows: list[SliceRow] = []
    best: dict[str, int] = {}
    by_name = {s.name: s for s in lineup()}

    def one(
        part: str, w: Workload, requests: list[SimRequest], load: float, sc: Scenario, *, rebalance: str
    ) -> None:
        start = time.perf_counter()
        result = simulate(requests, profile, limits, sc, config)
        row = _row(
            part=part,
            w=w,
            load=load,
            sc=sc,
            rebalance=rebalance,
            r=result,
            slo=slo,
            wall=time.perf_counter() - start,
        )
        rows.append(row)
        on_run(row)

    for w in workloads:
        capacity = measured_capacity(w.requests, profile, limits, config.instances) * config.instances
        priced = rebalance_from_profile(profile, w.requests)
        requests = at_rate(w.requests, sweep_load * capacity)
        # (policy, variant, rebalance params, KV limit, with an "off" row of its own)
        variants: list[tuple[str, str, dict[str, float], float | None, bool]] = [
            (name, "profile", priced, None, True) for name in SWEEP_POLICIES
        ]
        variants += [
            ("least_request", "router defaults", {}, None, False),
            ("least_request", f"profile, KV limit {KV_LIMIT:g}", priced, KV_LIMIT, True),
        ]
        for name, label, params, kv, with_off in variants:
            for s in (0, *sweep_s) if with_off else sweep_s:
                update = {"slice_tokens": s, "slice_rebalance": params, "kv_usage_limit": kv}
                one(
                    "sweep", w, requests, sweep_load, by_name[name].model_copy(update=update), rebalance=label
                )
        mine = [r for r in rows if r.workload == w.name and r.rebalance == "profile" and r.slice_tokens]
        best[w.name] = max(
            sweep_s,
            key=lambda s: np.mean([r.summary.goodput_rps for r in mine if r.slice_tokens == s]),
        )
        for load in grid_loads:
            requests = at_rate(w.requests, load * capacity)
            for sc in lineup():
                for s in (0, best[w.name]):
                    one(
                        "grid",
                        w,
                        requests,
                        load,
                        sc.model_copy(update={"slice_tokens": s, "slice_rebalance": priced}),
                        rebalance="profile",
                    )
    return rows, best


def _fmt(r: SliceRow) -> list[str]:
    m = r.summary
    return [
        f"{m.goodput_rps:.2f}",
        f"{m.slo_attainment:.1%}",
        f"{m.e2e_mean:.2f}",
        f"{m.e2e_p99:.2f}",
        f"{m.ttft_mean:.2f}",
        f"{m.tpot_mean * 1000:.1f}",
        f"{m.imbalance_cv:.2f}",
        str(m.preemptions),
        f"{r.slices_per_request:.1f}",
        f"{r.moved_share:.1%}",
    ]


_HEAD = [
    "goodput req/s",
    "SLO met",
    "e2e mean s",
    "e2e p99 s",
    "TTFT mean s",
    "TPOT mean ms",
    "imbalance CV",
    "preempt",
    "slices/req",
    "moved",
]


def markdown(rows: Sequence[SliceRow], best: dict[str, int]) -> str:
    out: list[str] = []
    for workload in dict.fromkeys(r.workload for r in rows):
        mine = [r for r in rows if r.workload == workload]
        sweep = [r for r in mine if r.part == "sweep"]
        out.append(f"### {workload}: slice length S at {sweep[0].load:.0%} load\n")
        head = ["policy", "S", "variant", *_HEAD, "prefill tokens / off", "goodput / off"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sweep:
            off = next(
                (
                    b
                    for b in sweep
                    if b.policy == r.policy and b.rebalance == r.rebalance and not b.slice_tokens
                ),
                next(
                    b
                    for b in sweep
                    if b.policy == r.policy and b.rebalance == "profile" and not b.slice_tokens
                ),
            )
            s = str(r.slice_tokens) if r.slice_tokens else "off"
            ratio = (
                f"{r.summary.goodput_rps / off.summary.goodput_rps:.2f}" if off.summary.goodput_rps else "-"
            )
            cells = [r.policy, s, r.rebalance, *_fmt(r)]
            out.append(
                "| " + " | ".join([*cells, f"{r.prefill_tokens / off.prefill_tokens:.2f}", ratio]) + " |"
            )
        out.append(
            f"\nBest S on {workload} (mean goodput of the sweep's policies, profile-priced rebalance): "
            f"**{best[workload]}**.\n"
        )
        grid = [r for r in mine if r.part == "grid"]
        out.append(f"### {workload}: every policy, whole requests vs S = {best[workload]}\n")
        head = ["load", "policy", "S", *_HEAD, "goodput / off", "p99 e2e / off"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in grid:
            off = next(b for b in grid if b.policy == r.policy and b.load == r.load and b.slice_tokens == 0)
            g = f"{r.summary.goodput_rps / off.summary.goodput_rps:.2f}" if off.summary.goodput_rps else "-"
            p = f"{r.summary.e2e_p99 / off.summary.e2e_p99:.2f}"
            s = str(r.slice_tokens) if r.slice_tokens else "off"
            out.append("| " + " | ".join([f"{r.load:.0%}", r.policy, s, *_fmt(r), g, p]) + " |")
        out.append("")
    return "\n".join(out)


def plot(rows: Sequence[SliceRow], folder: Path) -> list[Path]:
    """Per workload: the S sweep (goodput, p99 e2e, imbalance, prefill work vs S) and the on/off grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    for workload in dict.fromkeys(r.workload for r in rows):
        sweep = [r for r in rows if r.workload == workload and r.part == "sweep"]
        panels: tuple[tuple[str, Callable[[SliceRow], float]], ...] = (
            ("goodput under SLO (req/s)", lambda r: r.summary.goodput_rps),
            ("p99 end-to-end latency (s)", lambda r: r.summary.e2e_p99),
            ("imbalance CV", lambda r: r.summary.imbalance_cv),
            ("prefill tokens computed (M)", lambda r: r.prefill_tokens / 1e6),
        )
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
        for ax, (label, get) in zip(axes, panels, strict=True):
            for policy, variant in dict.fromkeys((r.policy, r.rebalance) for r in sweep):
                mine = [r for r in sweep if r.policy == policy and r.rebalance == variant]
                pts = sorted((r.slice_tokens, get(r)) for r in mine if r.slice_tokens)
                line = ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", label=f"{policy} ({variant})")
                off = next((r for r in mine if not r.slice_tokens), None)
                if off is not None:
                    ax.axhline(get(off), linestyle=":", color=line[0].get_color())
            ax.set_xscale("log", base=2)
            ax.set_xlabel("slice length S (tokens); dotted: off")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"slice length sweep: {workload} at {sweep[0].load:.0%} load")
        fig.tight_layout()
        paths.append(save_figure(fig, folder / f"{workload}-slice-sweep.png"))

        grid = [r for r in rows if r.workload == workload and r.part == "grid"]
        loads = sorted(dict.fromkeys(r.load for r in grid))
        policies = list(dict.fromkeys(r.policy for r in grid))
        fig, axes = plt.subplots(1, len(loads), figsize=(5 * len(loads), 4), squeeze=False)
        x = np.arange(len(policies))
        for ax, load in zip(axes[0], loads, strict=True):
            for k, on in enumerate((False, True)):
                vals = [
                    next(
                        r.summary.goodput_rps
                        for r in grid
                        if r.load == load and r.policy == p and bool(r.slice_tokens) == on
                    )
                    for p in policies
                ]
                ax.bar(x + (k - 0.5) * 0.4, vals, 0.4, label="sliced" if on else "whole")
            ax.set_xticks(x, policies, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{load:.0%} load", fontsize=10)
            ax.set_ylabel("goodput under SLO (req/s)")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{workload}: whole requests vs slices")
        fig.tight_layout()
        paths.append(save_figure(fig, folder / f"{workload}-slicing-on-off.png"))
    return paths


def rows_as_dicts(rows: Sequence[SliceRow]) -> list[dict[str, object]]:
    from dataclasses import asdict

    return [asdict(r) for r in rows]
