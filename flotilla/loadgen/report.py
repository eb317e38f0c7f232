"""results.md and results.png of a live run: absolute numbers, then ratios to the baseline arm.

A ratio below 1 is better for latencies, above 1 for throughput and goodput; the report says which
next to each column. Per-round ratios are shown next to the pooled one, so the reader sees how much
two repetitions of the same arm disagree on this machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from flotilla.loadgen.fleetprobe import bucket_quantile
from flotilla.loadgen.live import ArmPooled, ArmRun, LiveResults
from flotilla.loadgen.summary import Summary

Metric = tuple[str, Callable[[Summary], float], str]

RATIO_METRICS: list[Metric] = [
    ("TTFT mean", lambda s: s.ttft_s.mean, "lower"),
    ("TTFT p99", lambda s: s.ttft_s.p99, "lower"),
    ("TPOT mean", lambda s: s.tpot_s.mean, "lower"),
    ("TPOT p99", lambda s: s.tpot_s.p99, "lower"),
    ("ITL p99", lambda s: s.itl_s.p99, "lower"),
    ("e2e mean", lambda s: s.e2e_s.mean, "lower"),
    ("e2e p99", lambda s: s.e2e_s.p99, "lower"),
    ("throughput", lambda s: s.throughput_tok_s, "higher"),
    ("goodput", lambda s: s.goodput_rps, "higher"),
]


def ratio(value: float, base: float) -> float:
    if math.isnan(value) or math.isnan(base) or base == 0:
        return math.nan
    return value / base


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1000:.0f}"


def _absolute(rows: list[ArmPooled]) -> list[str]:
    lines = [
        "| arm | ok / sent | lost | TTFT mean / p50 / p99 (ms) | TPOT mean / p99 (ms) | ITL p99 (ms) "
        "| e2e mean / p50 / p99 (ms) | tok/s | goodput (req/s) | SLO met | load CV | busiest / mean "
        "| prefix hits | prefilled tokens | preemptions |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in rows:
        s, f = p.summary, p.fleet
        lines.append(
            f"| {p.arm} | {s.ok} / {s.requests} | {s.lost} "
            f"| {_ms(s.ttft_s.mean)} / {_ms(s.ttft_s.p50)} / {_ms(s.ttft_s.p99)} "
            f"| {_ms(s.tpot_s.mean)} / {_ms(s.tpot_s.p99)} | {_ms(s.itl_s.p99)} "
            f"| {_ms(s.e2e_s.mean)} / {_ms(s.e2e_s.p50)} / {_ms(s.e2e_s.p99)} "
            f"| {s.throughput_tok_s:.0f} | {_fmt(s.goodput_rps)} | {s.slo_attainment:.0%} "
            f"| {f.load_cv:.2f} | {f.max_share:.2f} | {f.prefix_hit_rate:.0%} | {f.prefill_tokens:,.0f} "
            f"| {f.preemptions:.0f} |"
        )
    return lines


def _ratios(rows: list[ArmPooled], runs: list[ArmRun], baseline: str) -> list[str]:
    base = next(p for p in rows if p.arm == baseline)
    heads = " | ".join(f"{name} ({better} better)" for name, _, better in RATIO_METRICS)
    lines = [f"| arm | {heads} |", "|---|" + "---:|" * len(RATIO_METRICS)]
    by_round: dict[tuple[str, int], Summary] = {(r.arm, r.round): r.summary for r in runs}
    rounds = sorted({r.round for r in runs})
    for p in rows:
        cells = []
        for _, get, _ in RATIO_METRICS:
            pooled = ratio(get(p.summary), get(base.summary))
            per_round = [
                ratio(get(by_round[(p.arm, k)]), get(by_round[(baseline, k)]))
                for k in rounds
                if (p.arm, k) in by_round and (baseline, k) in by_round
            ]
            spread = " (" + ", ".join(_fmt(x) for x in per_round) + ")" if len(per_round) > 1 else ""
            cells.append(f"**{_fmt(pooled)}**{spread}")
        lines.append(f"| {p.arm} | " + " | ".join(cells) + " |")
    return lines


def _rust_arms(rows: list[ArmPooled], baseline: str) -> list[str]:
    """The Rust routers' arms: flotilla's arms are also compared to each of them."""
    return [p.arm for p in rows if p.arm != baseline and p.arm.split()[0] in ("vllm-router", "sglang-router")]


def render(results: LiveResults) -> str:
    cfg = results.config
    e = cfg.engines
    engines = (
        f"{e.count} real vLLM (CPU) processes (the local `bench` model, one core each, "
        f"max_num_seqs {e.max_num_seqs})"
        if e.kind == "vllm"
        else f"{e.count} enginesim processes (profile `{e.profile}`, time scale {e.time_scale:g}, "
        f"max_num_seqs {e.max_num_seqs})"
    )
    out = [
        "# Live benchmark results",
        "",
        f"{engines}; {cfg.rounds} round(s), arm order rotated each round; "
        f"SLO TTFT <= {cfg.slo.ttft_s:g} s and TPOT <= {cfg.slo.tpot_s * 1000:g} ms. "
        f"Ratios are to `{cfg.baseline}`: pooled over rounds in bold, each round's in brackets.",
    ]
    for spec in cfg.workloads:
        rows = [p for p in results.pooled if p.workload == spec.name]
        runs = [r for r in results.runs if r.workload == spec.name]
        if not rows:  # a checkpoint taken before this workload finished
            out += ["", f"## {spec.name}: not finished ({len(runs)} arm runs done)"]
            continue
        rate = f"{spec.rate:g} req/s" if spec.rate else "the trace's own rate"
        out += [
            "",
            f"## {spec.name}: {results.requests_per_run.get(spec.name, 0)} requests per run, "
            f"{spec.duration_s:g} s of arrivals at {rate}",
            "",
            f"Ratios to `{cfg.baseline}`:",
            "",
            *_ratios(rows, runs, cfg.baseline),
            "",
        ]
        for other in _rust_arms(rows, cfg.baseline):
            out += [f"Ratios to `{other}`:", "", *_ratios(rows, runs, other), ""]
        out += [
            "Absolute, all rounds pooled (load CV, busiest / mean, prefix hits, prefilled tokens and "
            "preemptions are read from the engines' /metrics):",
            "",
            *_absolute(rows),
        ]
        shared = [p for p in rows if p.staleness]
        if shared:
            out += [
                "",
                "Shared state (router replicas over NATS): how old a peer's view of a replica's"
                " dispatches (a request's start, end, first token) is when it receives them, change"
                " to delivery, from the replicas' own `flotilla_router_peer_staleness_seconds`"
                ' (`kind="dispatch"`; upper bounds of histogram buckets):',
                "",
                "| arm | messages | p50 (ms) | p99 (ms) |",
                "|---|---:|---:|---:|",
            ]
            for p in shared:
                p50, p99 = bucket_quantile(p.staleness, 0.5), bucket_quantile(p.staleness, 0.99)
                n = max(p.staleness.values())
                cells = ["-" if q is None else f"{q * 1000:.1f}" for q in (p50, p99)]
                out.append(f"| {p.arm} | {n:.0f} | {cells[0]} | {cells[1]} |")
    return "\n".join(out) + "\n"


def plot(results: LiveResults, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = results.config
    finished = {p.workload for p in results.pooled}
    workloads = [w.name for w in cfg.workloads if w.name in finished]
    if not workloads:
        return
    metrics = [
        m
        for m in RATIO_METRICS
        if m[0] in {"TTFT mean", "TTFT p99", "TPOT mean", "e2e mean", "e2e p99", "goodput"}
    ]
    fig, axes = plt.subplots(len(workloads), 1, figsize=(12, 5.0 * len(workloads)), squeeze=False)
    for ax, name in zip(axes[:, 0], workloads, strict=True):
        rows = [p for p in results.pooled if p.workload == name]
        base = next(p for p in rows if p.arm == cfg.baseline)
        x = np.arange(len(metrics))
        width = 0.8 / max(1, len(rows))
        for i, p in enumerate(rows):
            values = [ratio(get(p.summary), get(base.summary)) for _, get, _ in metrics]
            ax.bar(x + i * width - 0.4 + width / 2, values, width, label=p.arm)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(x, [f"{m[0]}\n({m[2]} better)" for m in metrics])
        ax.set_yscale("log")
        ax.set_ylabel(f"ratio to {cfg.baseline}")
        ax.set_title(f"{name}: {len(rows)} arms on the same {cfg.engines.count} engines")
        ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: LiveResults, out: Path) -> None:
    (out / "results.md").write_text(render(results))
    plot(results, out / "results.png")
