"""Turn results.json into results.md (tables, ratios to direct) and latency.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(out: Path) -> None:
    data = json.loads((out / "results.json").read_text())
    runs: list[dict[str, Any]] = data["runs"]
    meta = data["meta"]
    targets = list(dict.fromkeys(r["target"] for r in runs))
    open_runs = [r for r in runs if r["mode"] == "open"]
    rates = sorted({r["offered"] for r in open_runs})
    by = {(r["target"], r["offered"], r["mode"]): r for r in runs}
    lines = [
        "# Router overhead: results",
        "",
        f"{meta['engines']} enginesim engines (zero step time), {meta['duration_s']:g} s per point, "
        f"{meta['cpus']} CPUs shared by load generator, router and engines. Non-streaming completions, "
        f"max_tokens={meta['body']['max_tokens']}. Latencies in ms; 'added' = router minus direct at the "
        "same offered rate (same run, interleaved).",
        "",
        "## Fixed request rates (open loop, Poisson arrivals)",
        "",
        "| offered req/s | target | achieved req/s | errors | p50 | p90 | p99 | added p50 | added p99 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in rates:
        d = by.get(("direct", rate, "open"))
        for t in targets:
            r = by.get((t, rate, "open"))
            if r is None:
                continue
            add50 = f"{r['p50_ms'] - d['p50_ms']:+.2f}" if d and t != "direct" else ""
            add99 = f"{r['p99_ms'] - d['p99_ms']:+.2f}" if d and t != "direct" else ""
            lines.append(
                f"| {rate:g} | {t} | {r['achieved_rps']:.1f} | {r['errors']} | {r['p50_ms']:.2f} | "
                f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {add50} | {add99} |"
            )
    lines += [
        "",
        "## Maximum throughput (closed loop)",
        "",
        "| concurrency | target | req/s | ratio to direct | p50 | p99 | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    closed = [r for r in runs if r["mode"] == "closed"]
    direct = next((r for r in closed if r["target"] == "direct"), None)
    for r in closed:
        ratio = f"{r['achieved_rps'] / direct['achieved_rps']:.2f}" if direct else ""
        lines.append(
            f"| {r['offered']:g} | {r['target']} | {r['achieved_rps']:.1f} | {ratio} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for t in targets:
        pts = sorted((r["offered"], r["p50_ms"], r["p99_ms"]) for r in open_runs if r["target"] == t)
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=t)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=t)
    for ax, title in zip(axes, ("p50 latency", "p99 latency"), strict=True):
        ax.set_xlabel("offered requests/s")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)


if __name__ == "__main__":
    write_report(Path(__file__).parent)
