"""What the demo shows at the end: request outcomes, latency percentiles, load per instance and
where the placement scheduler put each pod; as tables, a JSON file and one PNG.

Per-instance load comes from the engines' own Prometheus counters (requests finished, tokens
generated), read before and after the replay, so it counts what each engine really served.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from flotilla.localcluster.demo_traffic import RequestResult


@dataclass
class InstanceLoad:
    """One fleet pod: where it runs and what its engine served during the replay."""

    pod: str
    fleet: str
    model: str
    node: str
    zone: str
    gpus: int
    url: str
    requests: float = 0.0
    generated_tokens: float = 0.0


def engine_counters(metrics_text: str) -> tuple[float, float]:
    """(requests finished, tokens generated) from an engine's /metrics text (vLLM names)."""
    requests = tokens = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "vllm:request_success_total":
                requests += sample.value
            elif sample.name == "vllm:generation_tokens_total":
                tokens += sample.value
    return requests, tokens


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {f"p{q}": float(np.percentile(arr, q)) for q in (50, 90, 99)} | {"mean": float(arr.mean())}


def summarize(
    results: Sequence[RequestResult], instances: Sequence[InstanceLoad], wall_s: float
) -> dict[str, Any]:
    models = sorted({r.model for r in results})
    per_model = {}
    for model in [*models, "all"]:
        rs = [r for r in results if model in ("all", r.model)]
        ok = [r for r in rs if r.ok]
        per_model[model] = {
            "requests": len(rs),
            "succeeded": len(ok),
            "failed": len(rs) - len(ok),
            "output_tokens": sum(r.output_tokens for r in ok),
            "ttft_s": percentiles([r.ttft_s for r in ok if r.ttft_s is not None]),
            "e2e_s": percentiles([r.e2e_s for r in ok if r.e2e_s is not None]),
        }
    errors = sorted({r.error for r in results if r.error})[:5]
    return {
        "wall_s": wall_s,
        "models": per_model,
        "instances": [asdict(i) for i in instances],
        "errors": errors,
    }


def print_summary(summary: dict[str, Any], console: Console) -> None:
    total = summary["models"]["all"]
    table = Table(title=f"Requests ({summary['wall_s']:.0f} s, {total['output_tokens']} tokens streamed)")
    for column in ("model", "requests", "ok", "failed", "TTFT p50", "p90", "p99", "e2e p50", "p90", "p99"):
        table.add_column(column, justify="left" if column == "model" else "right")

    def ms(stats: dict[str, float], key: str) -> str:
        return f"{stats[key] * 1000:.0f} ms" if key in stats else "-"

    for model, m in summary["models"].items():
        table.add_row(
            model,
            str(m["requests"]),
            str(m["succeeded"]),
            str(m["failed"]),
            *(ms(m["ttft_s"], k) for k in ("p50", "p90", "p99")),
            *(f"{m['e2e_s'][k]:.1f} s" if k in m["e2e_s"] else "-" for k in ("p50", "p90", "p99")),
        )
    console.print(table)
    load = Table(title="Per instance (from each engine's own /metrics) and placement")
    for column in ("pod", "model", "node", "zone", "GPUs", "requests", "share", "tokens"):
        load.add_column(
            column, justify="right" if column in ("GPUs", "requests", "share", "tokens") else "left"
        )
    by_model: dict[str, float] = {}
    for i in summary["instances"]:
        by_model[i["model"]] = by_model.get(i["model"], 0.0) + i["requests"]
    for i in summary["instances"]:
        share = i["requests"] / by_model[i["model"]] if by_model[i["model"]] else 0.0
        load.add_row(
            i["pod"],
            i["model"],
            i["node"],
            i["zone"],
            str(i["gpus"]),
            f"{i['requests']:.0f}",
            f"{share:.0%}",
            f"{i['generated_tokens']:.0f}",
        )
    console.print(load)
    for error in summary["errors"]:
        console.print(f"[red]error:[/red] {error}")


def write_outputs(summary: dict[str, Any], results: Sequence[RequestResult], out: Path) -> list[Path]:
    """summary.json, requests.json and summary.png (when matplotlib is installed)."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "summary.json", out / "requests.json"]
    written[0].write_text(json.dumps(summary, indent=1))
    written[1].write_text(json.dumps([asdict(r) for r in results], indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    fig, (ax_ttft, ax_e2e, ax_load) = plt.subplots(1, 3, figsize=(16, 4.5))
    for model in sorted({r.model for r in results}):
        ok = [r for r in results if r.ok and r.model == model]
        for ax, values in (
            (ax_ttft, [r.ttft_s for r in ok if r.ttft_s is not None]),
            (ax_e2e, [r.e2e_s for r in ok if r.e2e_s is not None]),
        ):
            if values:
                xs = np.sort(values)
                ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=f"{model} ({len(xs)})")
    for ax, title in ((ax_ttft, "time to first token"), (ax_e2e, "end-to-end latency")):
        ax.set_xscale("log")
        ax.set_xlabel("seconds (log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"CDF of {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    instances = summary["instances"]
    names = [f"{i['pod']}\n{i['node']}" for i in instances]
    models = sorted({i["model"] for i in instances})
    colors = [f"C{models.index(i['model'])}" for i in instances]
    ax_load.bar(range(len(instances)), [i["requests"] for i in instances], color=colors)
    ax_load.set_xticks(range(len(instances)), names, rotation=45, ha="right", fontsize=7)
    ax_load.set_ylabel("requests served")
    ax_load.set_title("load per instance (colour: model)")
    fig.suptitle("flotilla demo: Mooncake conversation trace through the router")
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=110)
    plt.close(fig)
    written.append(out / "summary.png")
    return written
