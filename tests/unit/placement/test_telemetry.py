"""The placement loop's Prometheus metrics: updated from each plan, and served on /metrics and /healthz."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from flotilla.metricsserver import serve_metrics
from flotilla.placement.examples import tp_pod
from flotilla.placement.kube.fakecluster import FakeClusterApi, node_json, pod_json
from flotilla.placement.kube.loop import LoopConfig, PlacementLoop
from flotilla.placement.kube.telemetry import GREEDY_FALLBACK, UNKNOWN, PlacementMetrics, solver_outcome
from flotilla.placement.types.plan import Binding, Eviction, Move, Plan, Status
from flotilla.placement.types.snapshot import Snapshot

CONFIG = LoopConfig(budget_s=0.5, workers=1, batch_window_s=0.0, resync_s=0.05)


def value(m: PlacementMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def plan(**kw: Any) -> Plan:
    base = Plan(
        bindings=(), evictions=(), moves=(), unplaced=(), status=Status.OPTIMAL, approach="cp-sat/classes"
    )
    return replace(base, **kw)


def test_cycle_sets_placed_and_pending_per_tier_from_the_plan() -> None:
    snap = Snapshot(
        nodes=(),
        bound=(
            tp_pod("low-0", 8, 0, node="a"),
            tp_pod("low-1", 8, 0, node="b"),
            tp_pod("other", 8, 0, node="b", managed=False),  # not flotilla's: capacity only
        ),
        pending=(tp_pod("high-0", 8, 5), tp_pod("high-1", 8, 5), tp_pod("low-2", 1, 0)),
    )
    m = PlacementMetrics(CollectorRegistry())
    applied = plan(
        bindings=(Binding("high-1", "a"),),
        evictions=(Eviction("low-0", "a"),),
        unplaced=("low-2",),
    )
    # high-0's binding waited (its node still had a victim terminating): it is still pending
    m.observe_cycle(snap, applied, bound={"high-1"})
    assert value(m, "flotilla_placement_pods_placed", tier="5") == 1
    assert value(m, "flotilla_placement_pods_placed", tier="0") == 1  # low-1; low-0 was evicted
    assert value(m, "flotilla_placement_pods_pending", tier="5") == 1
    assert value(m, "flotilla_placement_pods_pending", tier="0") == 1
    assert value(m, "flotilla_placement_cycles_total", result="solved") == 1
    # a tier that no pod has any more disappears instead of freezing at its last value
    m.observe_cycle(Snapshot(nodes=(), bound=(tp_pod("low-1", 8, 0, node="b"),)), None, set())
    assert value(m, "flotilla_placement_pods_placed", tier="5") is None
    assert value(m, "flotilla_placement_pods_pending", tier="0") == 0
    assert value(m, "flotilla_placement_cycles_total", result="idle") == 1


def test_solver_outcome_names_the_greedy_fallbacks() -> None:
    assert solver_outcome(plan()) == "OPTIMAL"
    assert solver_outcome(plan(status=Status.FEASIBLE)) == "FEASIBLE"
    none = plan(status=Status.HEURISTIC, approach="cp-sat/classes (no solution in budget: best-fit)")
    assert solver_outcome(none) == UNKNOWN
    kept = plan(status=Status.FEASIBLE, approach="cp-sat/classes (best-fit kept)")
    assert solver_outcome(kept) == GREEDY_FALLBACK
    m = PlacementMetrics(CollectorRegistry())
    m.observe_solve(kept, 0.3)
    m.observe_solve(plan(), 0.02)
    assert value(m, "flotilla_placement_solver_runs_total", status=GREEDY_FALLBACK) == 1
    assert value(m, "flotilla_placement_solver_runs_total", status="OPTIMAL") == 1
    assert value(m, "flotilla_placement_solve_seconds_count") == 2
    assert value(m, "flotilla_placement_solve_seconds_bucket", le="0.025") == 1


def test_health_fails_when_no_cycle_ends() -> None:
    now = [100.0]
    m = PlacementMetrics(CollectorRegistry(), clock=lambda: now[0])
    assert m.healthy(60)  # start-up counts: the first cycle needs time too
    now[0] = 161.0
    assert not m.healthy(60)
    m.cycle_failed()  # a failed cycle still proves the loop turns
    assert m.healthy(60)
    assert value(m, "flotilla_placement_errors_total", operation="cycle") == 1


async def test_loop_counts_bindings_evictions_and_api_errors() -> None:
    pods = [pod_json("low-0", 8, 0, node="a"), pod_json("high-0", 8, 1), pod_json("ok-0", 2, 1)]
    cluster = FakeClusterApi([node_json("a"), node_json("b", gpus=2)], pods, refuse={"high-0"})
    m = PlacementMetrics(CollectorRegistry())
    loop = PlacementLoop(cluster, CONFIG, metrics=m)
    await loop.cycle()
    # only a holds high-0 (evicting low-0; its binding waits for the victim), ok-0 binds to b
    assert value(m, "flotilla_placement_bindings_total") == 1
    assert value(m, "flotilla_placement_evictions_total", reason="preempted") == 1
    assert value(m, "flotilla_placement_errors_total", operation="bind") is None
    await loop.cycle()  # the victim is gone: high-0 goes to a, and the API refuses
    assert value(m, "flotilla_placement_errors_total", operation="bind") == 1
    assert value(m, "flotilla_placement_pods_pending", tier="1") == 1
    assert value(m, "flotilla_placement_pods_placed", tier="1") == 1
    assert value(m, "flotilla_placement_solver_runs_total", status="OPTIMAL") == 2
    assert value(m, "flotilla_placement_solve_seconds_count") == 2


def test_a_moved_pod_leaves_the_placed_count() -> None:
    m = PlacementMetrics(CollectorRegistry())
    snap = Snapshot(nodes=(), bound=(tp_pod("x-0", 1, 0, node="a"),))
    m.observe_cycle(snap, plan(moves=(Move("x-0", "a", "b"),)), set())
    assert value(m, "flotilla_placement_pods_placed", tier="0") == 0


async def test_metrics_and_healthz_are_served_on_loopback() -> None:
    now = [0.0]
    m = PlacementMetrics(CollectorRegistry(), clock=lambda: now[0])
    m.bindings.inc(3)
    async with (
        serve_metrics(m.registry, "127.0.0.1", 0, healthy=lambda: m.healthy(60)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "flotilla_placement_bindings_total 3.0" in metrics.text
        assert metrics.headers["content-type"].startswith("text/plain")
        assert (await client.get("/healthz")).status_code == 200
        now[0] = 61.0
        assert (await client.get("/healthz")).status_code == 503
