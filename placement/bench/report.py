"""Aggregate scenario results into the tables and the plot committed in benchmarks/placement.

The headline metric is the paper's: among scenarios where the default scheduler left pods pending,
the share where we place more higher-tier pods (compared tier by tier, highest first). Next to it:
how often our plan is certified optimal, pods placed per tier, stranded GPUs and solve times.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from flotilla.placement.bench.runner import PolicyResult, ScenarioResult

OURS = "cp-sat/classes"
DEFAULT = "kube-default"
REAL = "kube-scheduler (real, KWOK)"


def tier_vector(r: PolicyResult, tiers: int) -> tuple[int, ...]:
    return tuple(r.placed_by_tier.get(t, 0) for t in reversed(range(tiers)))


def by_policy(s: ScenarioResult) -> dict[str, PolicyResult]:
    return {r.policy: r for r in s.results}


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}% ({part}/{whole})" if whole else "n/a"


def quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.array(values), q)) if values else float("nan")


def family_table(rows: list[ScenarioResult]) -> str:
    families: dict[str, list[ScenarioResult]] = defaultdict(list)
    for s in rows:
        families[s.family].append(s)
    lines = [
        "| family | scenarios | default left pods pending | we place more higher-tier pods | we place fewer "
        "| ours certified optimal | default certified optimal |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, scen in families.items():
        left = [s for s in scen if by_policy(s)[DEFAULT].pending_placed < s.pending]
        better = sum(1 for s in left if _cmp(s) > 0)
        worse = sum(1 for s in scen if _cmp(s) < 0)
        optimal = sum(1 for s in scen if by_policy(s)[OURS].status == "OPTIMAL")
        default_optimal = sum(1 for s in left if _cmp(s) == 0 and by_policy(s)[OURS].status == "OPTIMAL")
        lines.append(
            f"| {name} | {len(scen)} | {len(left)} | {pct(better, len(left))} | {pct(worse, len(scen))} "
            f"| {pct(optimal, len(scen))} | {pct(default_optimal, len(left))} |"
        )
    return "\n".join(lines)


def _cmp(s: ScenarioResult) -> int:
    p = by_policy(s)
    ours, default = tier_vector(p[OURS], s.tiers), tier_vector(p[DEFAULT], s.tiers)
    return (ours > default) - (ours < default)


def policy_table(rows: list[ScenarioResult]) -> str:
    families: dict[str, list[ScenarioResult]] = defaultdict(list)
    for s in rows:
        families[s.family].append(s)
    lines = [
        "| family | policy | placed, tier 3 / 2 / 1 / 0 (sum over scenarios) | pending placed "
        "| evictions | moves | stranded GPUs (mean) | fragmented GPUs (mean) | time p50 | time p99 "
        "| broken rules (partial gangs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, scen in families.items():
        policies = [r.policy for r in scen[0].results if all(r.policy in by_policy(s) for s in scen)]
        for policy in policies:
            rs = [by_policy(s)[policy] for s in scen]
            per_tier = [sum(r.placed_by_tier.get(t, 0) for r in rs) for t in (3, 2, 1, 0)]
            times = [r.seconds for r in rs]
            lines.append(
                f"| {name} | {policy} | {' / '.join(map(str, per_tier))} "
                f"| {sum(r.pending_placed for r in rs)} "
                f"| {sum(r.evictions for r in rs)} | {sum(r.moves for r in rs)} "
                f"| {np.mean([r.stranded_gpus for r in rs]):.1f} "
                f"| {np.mean([r.fragmented_gpus for r in rs]):.1f} "
                f"| {quantile(times, 0.5):.3f} s | {quantile(times, 0.99):.3f} s "
                f"| {sum(r.violations for r in rs)} |"
            )
    return "\n".join(lines)


def approach_table(rows: list[ScenarioResult]) -> str:
    scen = [s for s in rows if any(r.policy == "cp-sat/direct" for r in s.results)]
    by_size: dict[int, list[ScenarioResult]] = defaultdict(list)
    for s in scen:
        by_size[s.nodes].append(s)
    lines = [
        "| nodes | pods (bound + pending, mean) | approach | certified optimal | placed vs classes "
        "| time p50 | time p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in sorted(by_size):
        ss = by_size[size]
        pods = np.mean([s.bound + s.pending for s in ss])
        for approach in ("cp-sat/classes", "cp-sat/direct"):
            rs = [by_policy(s)[approach] for s in ss]
            optimal = sum(1 for r in rs if r.status == "OPTIMAL")
            placed = sum(sum(r.placed_by_tier.values()) for r in rs)
            base = sum(sum(by_policy(s)["cp-sat/classes"].placed_by_tier.values()) for s in ss)
            times = [r.seconds for r in rs]
            lines.append(
                f"| {size} | {pods:.0f} | {approach} | {pct(optimal, len(rs))} | {placed / max(base, 1):.3f} "
                f"| {quantile(times, 0.5):.3f} s | {quantile(times, 0.99):.3f} s |"
            )
    return "\n".join(lines)


def real_scheduler_table(rows: list[ScenarioResult]) -> str:
    """The real kube-scheduler (KWOK) against our re-implementation of it and against our solver."""
    replayed = [s for s in rows if REAL in by_policy(s)]
    if not replayed:
        return "Not run (`--kwok 0`, or the control-plane binaries are missing: `make binaries`)."
    lines = [
        "| family | nodes | tiers | placed per tier, high to low: real kube-scheduler | re-implementation "
        "| cp-sat | evictions real / re-impl / cp-sat |",
        "|---|---|---|---|---|---|---|",
    ]
    same = better = worse = 0
    for s in replayed:
        p = by_policy(s)
        real, ours, reimpl = p[REAL], p[OURS], p[DEFAULT]
        vec = {k: tier_vector(v, s.tiers) for k, v in (("real", real), ("ours", ours), ("reimpl", reimpl))}
        same += vec["real"] == vec["reimpl"]
        better += vec["ours"] > vec["real"]
        worse += vec["ours"] < vec["real"]
        lines.append(
            f"| {s.family} | {s.nodes} | {s.tiers} | {vec['real']} | {vec['reimpl']} | {vec['ours']} "
            f"| {real.evictions} / {reimpl.evictions} / {ours.evictions} |"
        )
    n = len(replayed)
    lines.append("")
    lines.append(
        f"Re-implementation identical to the real kube-scheduler per tier: {pct(same, n)}; "
        f"cp-sat places more higher-tier pods than the real kube-scheduler: {pct(better, n)}, "
        f"fewer: {pct(worse, n)}."
    )
    return "\n".join(lines)


def plot(rows: list[ScenarioResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, list[ScenarioResult]] = defaultdict(list)
    for s in rows:
        families[s.family].append(s)
    names = list(families)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    better, optimal = [], []
    for name in names:
        scen = families[name]
        left = [s for s in scen if by_policy(s)[DEFAULT].pending_placed < s.pending]
        better.append(100 * sum(1 for s in left if _cmp(s) > 0) / max(len(left), 1))
        optimal.append(100 * sum(1 for s in scen if by_policy(s)[OURS].status == "OPTIMAL") / len(scen))
    x = np.arange(len(names))
    axes[0].bar(x - 0.2, better, 0.4, label="more higher-tier pods than default")
    axes[0].bar(x + 0.2, optimal, 0.4, label="certified optimal")
    axes[0].set_xticks(x, names)
    axes[0].set_ylabel("% of scenarios")
    axes[0].set_ylim(0, 105)
    axes[0].legend(fontsize=8)
    axes[0].set_title("CP-SAT vs kube-scheduler default")
    policies = [OURS, DEFAULT, "best-fit"]
    for i, policy in enumerate(policies):
        means = [np.mean([by_policy(s)[policy].stranded_gpus for s in families[n]]) for n in names]
        axes[1].bar(x + (i - 1) * 0.27, means, 0.27, label=policy)
    axes[1].set_xticks(x, names)
    axes[1].set_ylabel("stranded GPUs (mean per scenario)")
    axes[1].legend(fontsize=8)
    axes[1].set_title("GPUs no pending pod can use")
    for policy in policies:
        sizes = sorted({s.nodes for s in rows})
        p50 = [quantile([by_policy(s)[policy].seconds for s in rows if s.nodes == n], 0.5) for n in sizes]
        axes[2].plot(sizes, p50, marker="o", label=policy)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("nodes")
    axes[2].set_ylabel("wall time p50 (s)")
    axes[2].legend(fontsize=8)
    axes[2].set_title("time per scenario (shared 2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
