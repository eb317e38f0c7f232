"""The `flotilla demo` command's options; the demo itself is imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flotilla.localcluster.engines import EngineKind


def demo(
    *,
    duration: Annotated[float, typer.Option(help="Seconds of the trace to replay.")] = 60.0,
    rate_scale: Annotated[
        float | None, typer.Option(help="Arrival rate relative to the trace [default: 1, vLLM 0.5].")
    ] = None,
    max_prompt_tokens: Annotated[
        int | None, typer.Option(help="Prompts are cut here [default: 8192, vLLM 1024].")
    ] = None,
    max_output_tokens: Annotated[
        int | None, typer.Option(help="Answers are cut here [default: 1024, vLLM 128].")
    ] = None,
    trace: Annotated[Path, typer.Option(help="Mooncake-format trace (jsonl).")] = Path(
        "../shared/data/traces/mooncake_conversation_trace.jsonl"
    ),
    examples: Annotated[Path, typer.Option(help="Folder of InferenceFleets to apply.")] = Path("examples"),
    out: Annotated[Path, typer.Option(help="Where summary.json and summary.png go.")] = Path("build/demo"),
    keep_running: Annotated[
        bool, typer.Option("--keep-running/--exit", help="Wait for Ctrl-C after the summary, or exit.")
    ] = True,
    name: Annotated[str, typer.Option(help="Cluster name (its run dir).", hidden=True)] = "flotilla-demo",
    engine: Annotated[
        EngineKind,
        typer.Option(
            help="What serves each pod: real vLLM (CPU, a tiny local model; installed on first use, "
            "about 3 minutes and 6 GB) or flotilla's simulated engine (fast, H100 timings)."
        ),
    ] = EngineKind.enginesim,
) -> None:
    """The whole system on a local default: control plane with KWOK GPU nodes, operator, placement,
    router, an engine per pod, the example fleets, a real trace replayed, a summary and a PNG."""
    from flotilla.localcluster.demo import DemoOptions, run_demo

    run_demo(
        DemoOptions(
            duration_s=duration,
            rate_scale=rate_scale,
            max_input_tokens=max_prompt_tokens,
            max_output_tokens=max_output_tokens,
            trace=trace,
            examples=examples,
            out=out,
            keep_running=keep_running,
            name=name,
            engine=engine.value,
        )
    )
