"""The demo's summary: engine counters parsed from vLLM-named metrics, percentiles per model."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from flotilla.enginesim.metrics import EngineMetrics
from flotilla.localcluster.demo_report import InstanceLoad, engine_counters, summarize, write_outputs
from flotilla.localcluster.demo_traffic import RequestResult


def test_engine_counters_read_the_engines_own_metrics() -> None:
    registry = CollectorRegistry()
    metrics = EngineMetrics(registry, model_name="m", cache_info={"block_size": "16"})
    metrics.finished("length")
    metrics.finished("length")
    metrics.finished("stop")
    metrics.generation_tokens.inc(42)
    assert engine_counters(generate_latest(registry).decode()) == (3.0, 42.0)


def result(model: str, ttft: float, e2e: float, ok: bool = True) -> RequestResult:
    return RequestResult(model, 0.0, ok, 200 if ok else 503, ttft if ok else None, e2e if ok else None, 5)


def test_summary_per_model_and_outputs(tmp_path: Path) -> None:
    results = [
        result("a", 0.1, 1.0),
        result("a", 0.3, 3.0),
        result("b", 0.2, 2.0),
        result("b", 0, 0, ok=False),
    ]
    instance = InstanceLoad("p", "f", "a", "n", "z", 1, "http://x", requests=2, generated_tokens=10)
    summary = summarize(results, [instance], wall_s=5.0)
    assert summary["models"]["a"]["succeeded"] == 2 and summary["models"]["a"]["ttft_s"]["p50"] == 0.2
    assert summary["models"]["b"]["failed"] == 1
    assert summary["models"]["all"]["requests"] == 4 and summary["models"]["all"]["output_tokens"] == 15
    written = write_outputs(summary, results, tmp_path)
    assert {p.name for p in written} == {"summary.json", "requests.json", "summary.png"}
