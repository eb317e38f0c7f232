"""The whole simulation: determinism, the router's policies unchanged, sessions, the oracle's edge."""

import random
from pathlib import Path

import numpy as np
import pytest

from flotilla.api.routing import NoParams
from flotilla.profiles import StepTimeProfile
from flotilla.router.policies import InstanceView, PolicyRegistry, RequestFeatures, Snapshot, default_registry
from flotilla.sim import bench, workloads
from flotilla.sim.capacity import instance_capacity
from flotilla.sim.metrics import Slo, summarize
from flotilla.sim.predictions import learned_lengths
from flotilla.sim.request import SimRequest
from flotilla.sim.scenario import Scenario, default_lineup
from flotilla.sim.simulator import SimConfig, simulate
from flotilla.sim.workloads import Workload, at_rate


def mixed(n: int, seed: int) -> list[SimRequest]:
    rng = random.Random(seed)
    out = []
    t = 0.0
    for i in range(n):
        t += rng.expovariate(1.0)
        out.append(
            SimRequest(
                i,
                t,
                rng.randrange(20, 400),
                rng.choice([4, 8, 16, 400]),
                prefix_ids=(rng.randrange(3), 10 + i),
                prefix_block_tokens=128,
            )
        )
    return out


def test_same_seed_same_run(profile: StepTimeProfile) -> None:
    reqs = at_rate(mixed(300, 0), 40.0)
    sc = Scenario(name="lr", policy="least_request")
    a = simulate(reqs, profile, profile.limits, sc, SimConfig(instances=4, seed=7))
    b = simulate(reqs, profile, profile.limits, sc, SimConfig(instances=4, seed=7))
    for field in ("first_token", "finished", "instance", "preemptions"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    c = simulate(reqs, profile, profile.limits, sc, SimConfig(instances=4, seed=8))
    assert not np.array_equal(a.instance, c.instance)


@pytest.mark.parametrize(
    "scenario", [s for s in default_lineup() if s.predictor != "learned"], ids=lambda s: s.name
)
def test_every_policy_of_the_router_runs_and_completes_everything(
    scenario: Scenario, profile: StepTimeProfile
) -> None:
    assert scenario.policy in default_registry().names()
    reqs = at_rate(mixed(200, 1), 30.0)
    r = simulate(reqs, profile, profile.limits, scenario, SimConfig(instances=3))
    assert np.isfinite(r.finished).all()
    assert (r.output_tokens == [q.output_tokens for q in reqs]).all()
    assert (r.first_token >= r.arrival).all() and (r.finished >= r.first_token).all()
    assert r.decisions >= len(reqs)
    assert r.loads.shape[1] == 3


def test_round_robin_cycles_through_instances(profile: StepTimeProfile) -> None:
    reqs = [SimRequest(i, i * 10.0, 50, 2) for i in range(8)]
    r = simulate(
        reqs, profile, profile.limits, Scenario(name="rr", policy="round_robin"), SimConfig(instances=4)
    )
    assert r.instance.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_router_slots_bound_each_instance_and_queue_the_rest(profile: StepTimeProfile) -> None:
    reqs = [SimRequest(i, 0.0, 100, 50) for i in range(12)]
    sc = Scenario(name="lr", policy="least_request", params={"choices": 0})
    r = simulate(reqs, profile, profile.limits, sc, SimConfig(instances=2, max_inflight=2))
    assert (r.dispatched > 0).sum() == 8  # four go at once, the rest wait for a slot
    assert np.bincount(r.instance).tolist() == [6, 6]


def test_later_turn_waits_for_the_earlier_one(profile: StepTimeProfile) -> None:
    reqs = [
        SimRequest(0, 0.0, 600, 200, prefix_ids=(1, 2)),
        SimRequest(1, 0.1, 900, 10, prefix_ids=(1, 2), parent=0),
    ]
    r = simulate(
        reqs, profile, profile.limits, Scenario(name="x", policy="least_request"), SimConfig(instances=2)
    )
    assert r.arrival[1] == r.finished[0] > 0.1


def test_prefix_affinity_keeps_a_shared_prefix_on_one_instance(profile: StepTimeProfile) -> None:
    reqs = [SimRequest(i, i * 2.0, 600, 5, prefix_ids=(42, 100 + i)) for i in range(20)]
    cfg = SimConfig(instances=4)
    affine = simulate(reqs, profile, profile.limits, Scenario(name="p", policy="prefix_affinity"), cfg)
    assert len(set(affine.instance.tolist())) == 1
    rr = simulate(reqs, profile, profile.limits, Scenario(name="rr", policy="round_robin"), cfg)
    assert affine.instance_prefix_hits.sum() > rr.instance_prefix_hits.sum()


def test_oracle_beats_round_robin_on_a_skewed_workload(profile: StepTimeProfile) -> None:
    # Small batches, so that requests queue and the order of service matters.
    limits = profile.limits.model_copy(update={"max_num_seqs": 2})
    rng = random.Random(5)
    reqs = [SimRequest(i, float(i), 64, 600 if rng.random() < 0.1 else 8) for i in range(400)]
    reqs = at_rate(reqs, 0.9 * 4 * instance_capacity(reqs, profile, limits))
    lineup = {s.name: s for s in default_lineup()}
    cfg = SimConfig(instances=4, max_inflight=4)
    slo = Slo()
    rr = summarize(simulate(reqs, profile, limits, lineup["round_robin"], cfg), slo)
    oracle = summarize(simulate(reqs, profile, limits, lineup["oracle_srf"], cfg), slo)
    assert oracle.e2e_mean < 0.8 * rr.e2e_mean
    assert oracle.completed == rr.completed == len(reqs)


def test_sweep_table_lists_every_scenario_and_load(profile: StepTimeProfile, tmp_path: Path) -> None:
    w = Workload("mix", mixed(120, 2))
    lineup = default_lineup()[:3]
    rows = bench.sweep(
        [w],
        [0.5, 0.9],
        lineup,
        profile=profile,
        limits=profile.limits,
        config=SimConfig(instances=2),
        slo=Slo(),
    )
    assert len(rows) == 6
    table = bench.markdown_table(rows)
    for s in lineup:
        assert table.count(f"| {s.name} |") == 2
    assert all(r.summary.completed == 120 for r in rows)
    assert all(0.5 * r.capacity_rps == pytest.approx(r.rate_rps) for r in rows if r.load == 0.5)
    two = bench.sweep(
        [w, Workload("mix", mixed(120, 3), sample=1)],
        [0.5],
        lineup[:1],
        profile=profile,
        limits=profile.limits,
        config=SimConfig(instances=2),
        slo=Slo(),
    )
    (avg,) = bench.average(two)
    assert avg.samples == 2
    assert avg.summary.e2e_mean == pytest.approx((two[0].summary.e2e_mean + two[1].summary.e2e_mean) / 2)
    assert avg.e2e_mean_range == (
        min(r.summary.e2e_mean for r in two),
        max(r.summary.e2e_mean for r in two),
    )
    paths = bench.plot(rows, tmp_path) + bench.plot_loads(rows, tmp_path)
    assert [p.name for p in paths] == ["mix.png", "mix-instance-load.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert "loads" not in bench.rows_as_dicts(rows)[0]


class Spy:
    """A policy that records what it was shown and picks like least_request with d = 0."""

    name = "spy"
    Params = NoParams

    def __init__(self, params: NoParams) -> None:
        self.seen: list[tuple[InstanceView, ...]] = []

    def rank(self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random) -> list[InstanceView]:
        self.seen.append(snapshot.instances)
        return sorted(snapshot.instances, key=lambda i: (i.est_requests, i.id))


def test_policies_see_stale_scrapes_plus_exact_accounting(profile: StepTimeProfile) -> None:
    spy = Spy(NoParams())
    registry = PolicyRegistry()
    registry.register("spy", NoParams, lambda params: spy)
    reqs = [SimRequest(i, 0.01 * (i + 1), 200, 300) for i in range(10)]
    cfg = SimConfig(instances=2, scrape_interval_s=1000.0)
    simulate(reqs, profile, profile.limits, Scenario(name="spy", policy="spy"), cfg, policies=registry)
    assert len(spy.seen) == 10
    # The only scrape (at t=0) saw idle engines; the router's own counts are exact.
    assert all(v.running == v.waiting == 0 for views in spy.seen for v in views)
    assert [sum(v.inflight for v in views) for views in spy.seen] == list(range(10))
    assert [sum(v.est_requests for v in views) for views in spy.seen] == list(range(10))
    # Proxy predictions (prompt length, 200) of the 9 requests already placed; some have streamed tokens.
    remaining = sum(v.predicted_remaining_tokens for v in spy.seen[-1])
    assert 0 < remaining <= 200.0 * 9


def test_requests_that_cannot_fit_an_engine_are_refused(profile: StepTimeProfile) -> None:
    too_long = [SimRequest(0, 0.0, profile.limits.max_model_len, 5)]
    with pytest.raises(ValueError, match="does not fit"):
        simulate(
            too_long,
            profile,
            profile.limits,
            Scenario(name="x", policy="round_robin"),
            SimConfig(instances=1),
        )


def test_learned_predictor_needs_text_and_is_skipped_where_there_is_none(profile: StepTimeProfile) -> None:
    learned = next(s for s in default_lineup() if s.predictor == "learned")
    with pytest.raises(ValueError, match="prompt text"):
        simulate(mixed(5, 0), profile, profile.limits, learned, SimConfig(instances=1))
    rows = bench.sweep(
        [Workload("mix", mixed(40, 0))],
        [0.5],
        [learned, default_lineup()[0]],
        profile=profile,
        limits=profile.limits,
        config=SimConfig(instances=2),
        slo=Slo(),
    )
    assert [r.scenario for r in rows] == ["round_robin"]


@pytest.mark.skipif(not workloads.TRACES["castillo_llama"].exists(), reason="../shared/data is not present")
def test_learned_predictor_runs_on_castillo_prompts(profile: StepTimeProfile) -> None:
    w = workloads.load("castillo_llama", max_model_len=profile.limits.max_model_len, limit=60)
    lengths = learned_lengths(w.requests, "llama-3.1-8b-v1")
    assert len(lengths) == 60 and all(x > 0 for x in lengths)
    learned = next(s for s in default_lineup() if s.predictor == "learned")
    r = simulate(
        at_rate(w.requests, 20.0), profile, profile.limits, learned, SimConfig(instances=2), predicted=lengths
    )
    assert np.isfinite(r.finished).all()
