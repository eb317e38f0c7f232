"""The chaos benchmark's outputs: chaos.json (everything measured), chaos.md (the table) and
chaos.png (latency of every request over time, fault and recovery marked)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}"


def _s(value: float | None) -> str:
    return "not within the limit" if value is None else f"{value:.1f}"


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per fault: what the clients saw and how long recovery took."""
    head = (
        "| fault | sent | lost | error responses | refused, retried elsewhere | slices failed over "
        "| p99 before (ms) | p99 during (ms) | p99 after (ms) | recovery (s) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        s = r["summary"]
        rows.append(
            f"| {r['fault']} | {s['sent']} | {s['lost']} | {s['error_responses']} | {r['refused_retried']} "
            f"| {r['failovers']:.0f} | {_ms(s['p99_before_s'])} | {_ms(s['p99_during_s'])} "
            f"| {_ms(s['p99_after_s'])} | {_s(r['recovery_s'])} |"
        )
    return head + "\n".join(rows) + "\n"


def _notes(r: dict[str, Any]) -> str:
    hidden = ("pods_before_scale_up", "operator_exits_before", "last_poll_error")
    keep = {k: v for k, v in r["notes"].items() if k not in hidden and not k.startswith("_")}
    return ", ".join(f"{k}={v}" for k, v in keep.items())


def write_markdown(path: Path, results: Sequence[dict[str, Any]], setup: dict[str, Any]) -> None:
    lines = [
        "# Faults under load: results",
        "",
        f"Run {setup['date']} on {setup['machine']}; `{setup['command']}`.",
        "",
        f"Load: {setup['load']}. System: {setup['system']}.",
        "",
        markdown_table(results),
        "Columns: *lost* = requests whose client did not get a 200, a `[DONE]` and exactly the text an "
        "unfaulted run gives (the simulated engine is deterministic, so every answer is checked token "
        "for token); *error responses* = non-200 answers; *refused, retried elsewhere* = requests a "
        "router replica refused before answering (connection refused or closed, or 503 with "
        "Retry-After) that the client sent to the other replica; *slices failed over* = slices the "
        "routers resumed on another instance after an engine was lost mid-stream; p99 = end-to-end "
        "latency to `[DONE]` of the requests *sent* before the fault, between the fault and full "
        "recovery, and after; *recovery* = from the fault to full strength again (fleet Ready at "
        "its size on its current revision, every engine answering, both routers routing to every "
        "instance; after the API server restart also: the scale-up reconciled and the new instance "
        "has served requests).",
        "",
        "## Faults",
        "",
    ]
    for r in results:
        lines.append(f"- **{r['fault']}**: {r['what']}. Injected at {r['injected_s']:.1f} s; {_notes(r)}.")
    lines += ["", "![latency over time](chaos.png)", ""]
    path.write_text("\n".join(lines))


def write_plot(path: Path, results: Sequence[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = (len(results) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.2 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results, strict=False):
        ok = [(t["sent_s"], t["latency_s"]) for t in r["timeline"] if t["complete"] and t["latency_s"]]
        bad = [(t["sent_s"], t["latency_s"] or 0.0) for t in r["timeline"] if not t["complete"]]
        if ok:
            ax.scatter(*zip(*ok, strict=True), s=6, color="tab:blue", label="complete")
        if bad:
            ax.scatter(*zip(*bad, strict=True), s=20, color="tab:red", marker="x", label="lost")
        ax.axvline(r["injected_s"], color="tab:red", linestyle="--", label="fault")
        if r["recovered_s"] is not None:
            ax.axvspan(
                r["injected_s"], r["recovered_s"], color="tab:orange", alpha=0.2, label="until recovered"
            )
        ax.set_title(f"{r['fault']} (lost {r['summary']['lost']} of {r['summary']['sent']})", fontsize=10)
        ax.set_xlabel("request sent at (s)")
        ax.set_ylabel("latency to [DONE] (s)")
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(out: Path, results: Sequence[dict[str, Any]], setup: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "chaos.json", out / "chaos.md", out / "chaos.png"]
    paths[0].write_text(json.dumps({"setup": setup, "results": list(results)}, indent=1) + "\n")
    write_markdown(paths[1], results, setup)
    write_plot(paths[2], results)
    return paths
