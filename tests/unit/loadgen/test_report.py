"""The report: ratios to the baseline per metric, per round and pooled, and the PNG."""

from __future__ import annotations

from pathlib import Path

from flotilla.loadgen.fleetprobe import FleetStats
from flotilla.loadgen.live import ArmPooled, ArmRun, LiveConfig, LiveResults, WorkloadSpec
from flotilla.loadgen.record import RequestRecord
from flotilla.loadgen.report import render, write_report
from flotilla.loadgen.summary import Slo, summarise
from flotilla.loadgen.targets import Arm

FLEET = FleetStats(
    load_cv=0.1, max_share=1.2, prefix_hit_rate=0.5, preemptions=0, prefill_tokens=100, samples=4
)


def summary(ttft: float) -> object:
    recs = [
        RequestRecord(
            index=i,
            sent_s=float(i),
            expected_tokens=3,
            status=200,
            ttft_s=ttft,
            e2e_s=ttft + 0.2,
            itl_s=[0.1, 0.1],
            output_tokens=3,
            chunks=3,
            done=True,
        )
        for i in range(4)
    ]
    return summarise(recs, Slo(), window_s=4.0)


def results() -> LiveResults:
    arms = [
        Arm(name="rr", router="flotilla", policy="round_robin"),
        Arm(name="fast", router="flotilla", policy="least_request"),
    ]
    cfg = LiveConfig(
        workloads=[WorkloadSpec(name="poisson", duration_s=4, rate=1)], arms=arms, rounds=2, baseline="rr"
    )
    ttft = {("rr", 0): 1.0, ("rr", 1): 1.0, ("fast", 0): 0.5, ("fast", 1): 0.25}
    runs = [
        ArmRun(workload="poisson", arm=a, round=k, order=0, summary=summary(v), fleet=FLEET)  # type: ignore[arg-type]
        for (a, k), v in ttft.items()
    ]
    pooled = [
        ArmPooled(workload="poisson", arm="rr", summary=summary(1.0), fleet=FLEET),  # type: ignore[arg-type]
        ArmPooled(workload="poisson", arm="fast", summary=summary(0.4), fleet=FLEET),  # type: ignore[arg-type]
    ]
    return LiveResults(config=cfg, requests_per_run={"poisson": 4}, runs=runs, pooled=pooled)


def test_ratios_pooled_and_per_round(tmp_path: Path) -> None:
    text = render(results())
    fast = next(line for line in text.splitlines() if line.startswith("| fast | **"))
    cells = [c.strip() for c in fast.split("|")[2:-1]]
    assert cells[0] == "**0.40** (0.50, 0.25)"  # TTFT mean: pooled, then each round
    assert "| rr | **1.00** (1.00, 1.00)" in text
    write_report(results(), tmp_path)
    assert (tmp_path / "results.md").read_text() == text
    assert (tmp_path / "results.png").stat().st_size > 10_000
