"""Slice-level scheduling in the simulator: the router's slicing decisions, run unchanged."""

import random
from pathlib import Path

import numpy as np
import pytest

from flotilla.api.routing import NoParams
from flotilla.profiles import StepTimeProfile
from flotilla.router.policies import InstanceView, PolicyRegistry, RequestFeatures, Snapshot
from flotilla.sim.request import SimRequest
from flotilla.sim.scenario import Scenario, default_lineup
from flotilla.sim.simulator import RunResult, SimConfig, simulate
from flotilla.sim.workloads import at_rate

# Moves whenever another instance has fewer requests (no hysteresis, re-prefill free).
EAGER = {"decode_seq_ms": 1.0, "prefill_token_ms": 0.0, "min_gap_requests": 1.0}
# Never moves.
STAY = {"min_gap_requests": 1e9}


def run(
    reqs: list[SimRequest], profile: StepTimeProfile, instances: int = 1, **scenario: object
) -> RunResult:
    params = {"name": "s", "policy": "least_request", **scenario}
    return simulate(
        reqs, profile, profile.limits, Scenario.model_validate(params), SimConfig(instances=instances)
    )


@pytest.mark.parametrize(("output", "max_tokens", "slices"), [(1000, 300, 5), (200, None, 4), (64, None, 1)])
def test_a_sliced_request_produces_its_whole_output(
    profile: StepTimeProfile, output: int, max_tokens: int | None, slices: int
) -> None:
    r = run([SimRequest(0, 0.0, 100, output, max_tokens=max_tokens)], profile, slice_tokens=64)
    assert r.output_tokens[0] == min(output, max_tokens or output)
    assert r.slices[0] == slices
    whole = run([SimRequest(0, 0.0, 100, output, max_tokens=max_tokens)], profile)
    assert whole.slices[0] == 1
    # The client sees one request: first token when the first slice's came, end with the last.
    assert r.first_token[0] == pytest.approx(whole.first_token[0])
    assert r.finished[0] >= whole.finished[0]


def test_continuation_on_the_same_instance_hits_its_cached_context(profile: StepTimeProfile) -> None:
    prompt, output = 1000, 300
    r = run([SimRequest(0, 0.0, prompt, output)], profile, slice_tokens=64)
    assert r.slices[0] == 5 and r.moves[0] == 0
    # Each continuation recomputes at most its last partial block (and vLLM's one recomputed token).
    assert prompt < r.instance_prefill_tokens[0] <= prompt + 4 * (profile.limits.block_size + 1)
    assert r.instance_prefix_hits[0] >= sum(prompt + 64 * k - profile.limits.block_size for k in range(1, 5))


class Rotate:
    """Ranks only the next instance in turn: every slice runs on an instance it never ran on."""

    Params = NoParams

    def __init__(self, params: NoParams) -> None:
        self.k = 0

    def rank(self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random) -> list[InstanceView]:
        self.k += 1
        return [v for v in snapshot.instances if v.id == f"i{self.k % len(snapshot.instances):03d}"]


def test_continuation_elsewhere_prefills_its_context_again(profile: StepTimeProfile) -> None:
    registry = PolicyRegistry()
    registry.register("rotate", NoParams, Rotate)
    prompt = 1000
    reqs = [SimRequest(0, 0.0, prompt, 300)]
    sc = Scenario(name="rot", policy="rotate", slice_tokens=64)
    r = simulate(reqs, profile, profile.limits, sc, SimConfig(instances=5), policies=registry)
    assert r.slices[0] == 5 and r.moves[0] == 4
    assert r.output_tokens[0] == 300
    # Every slice prefilled its whole context: the prompt plus everything generated before it.
    contexts = sum(prompt + 64 * k for k in range(5))
    assert r.instance_prefill_tokens.sum() == contexts
    assert r.instance_prefix_hits.sum() == 0


def mixed(n: int, seed: int) -> list[SimRequest]:
    rng = random.Random(seed)
    out, t = [], 0.0
    for i in range(n):
        t += rng.expovariate(1.0)
        shared = (rng.randrange(3), 10 + i)
        out.append(SimRequest(i, t, rng.randrange(20, 400), rng.choice([4, 8, 16, 400]), shared, 128))
    return out


@pytest.mark.parametrize(
    "scenario", [s for s in default_lineup() if s.predictor != "learned"], ids=lambda s: s.name
)
def test_off_is_whole_requests_and_a_slice_past_every_length_changes_nothing(
    scenario: Scenario, profile: StepTimeProfile
) -> None:
    reqs = at_rate(mixed(300, 2), 40.0)
    cfg = SimConfig(instances=3, seed=3)
    off = simulate(reqs, profile, profile.limits, scenario, cfg)
    long = simulate(reqs, profile, profile.limits, scenario.model_copy(update={"slice_tokens": 10_000}), cfg)
    assert (off.slices == 1).all() and (off.moves == 0).all()
    for field in ("first_token", "finished", "instance", "preemptions", "output_tokens", "loads"):
        np.testing.assert_array_equal(getattr(off, field), getattr(long, field))
    sliced = simulate(reqs, profile, profile.limits, scenario.model_copy(update={"slice_tokens": 32}), cfg)
    assert (sliced.output_tokens == off.output_tokens).all()
    assert sliced.slices.sum() > off.slices.sum()


def hot_instance_workload() -> list[SimRequest]:
    """Round robin sends every long request to instance 0 and every short one to instance 1."""
    return [SimRequest(i, 0.001 * i, 200, 1500 if i % 2 == 0 else 4) for i in range(16)]


def test_rebalancing_moves_slices_off_a_hot_instance(profile: StepTimeProfile) -> None:
    # Steps whose cost grows with the batch, so that halving a batch pays.
    coefficients = profile.coefficients.model_copy(update={"decode_seq_s": 2e-3})
    prof = profile.model_copy(update={"coefficients": coefficients})
    reqs = hot_instance_workload()
    kw = {"instances": 2, "policy": "round_robin", "slice_tokens": 128}
    stay = run(reqs, prof, **kw, slice_rebalance=STAY)
    move = run(reqs, prof, **kw, slice_rebalance=EAGER)
    longs = np.arange(0, 16, 2)
    assert stay.moves.sum() == 0
    assert stay.instance_generated[1] == 8 * 4  # only the short requests' tokens
    assert move.moves[longs].sum() > 0
    assert (move.output_tokens == stay.output_tokens).all()
    # The long requests' tokens end up spread over both instances, and they finish sooner.
    assert move.instance_generated[1] > 0.3 * move.instance_generated.sum()
    assert move.finished[longs].mean() < 0.8 * stay.finished[longs].mean()


def test_the_routers_default_hysteresis_keeps_a_long_context_where_it_is(profile: StepTimeProfile) -> None:
    # The router's defaults price the re-prefill of a 200-token context above the decode saved by
    # moving a 128-token slice away from a gap of one or two requests: nothing moves.
    reqs = [SimRequest(i, 0.001 * i, 200, 1500 if i % 2 == 0 else 4) for i in range(4)]
    r = run(reqs, profile, instances=2, policy="round_robin", slice_tokens=128)
    assert r.moves.sum() == 0


def test_memory_aware_admission_avoids_preemption(profile: StepTimeProfile) -> None:
    # 16 requests of 200 + 1500 tokens need 1700 blocks of 16 on an engine of 2048 blocks: the
    # engine preempts once the decodes grow; the router's KV limit holds some back instead.
    limits = profile.limits.model_copy(update={"kv_cache_blocks": 900})
    small = profile.model_copy(update={"limits": limits})
    reqs = [SimRequest(i, 0.0, 200, 1500) for i in range(16)]
    free = simulate(reqs, small, limits, Scenario(name="a", policy="least_request"), SimConfig(instances=1))
    held = simulate(
        reqs,
        small,
        limits,
        Scenario(name="b", policy="least_request", kv_usage_limit=0.9, slice_tokens=128),
        SimConfig(instances=1, scrape_interval_s=0.05),
    )
    assert free.preemptions.sum() > 0
    assert held.preemptions.sum() < free.preemptions.sum()
    assert (held.output_tokens == 1500).all()


def test_the_slicing_benchmark_runs_end_to_end(profile: StepTimeProfile, tmp_path: Path) -> None:
    from flotilla.sim import slicing_bench
    from flotilla.sim.metrics import Slo
    from flotilla.sim.workloads import Workload

    w = Workload("tiny", mixed(150, 4))
    rows, best = slicing_bench.run(
        [w],
        sweep_load=0.8,
        sweep_s=[16, 64],
        grid_loads=[0.8],
        profile=profile,
        limits=profile.limits,
        config=SimConfig(instances=2),
        slo=Slo(),
    )
    assert len(rows) == slicing_bench.runs_per_workload(2, 1)
    assert best["tiny"] in (16, 64)
    assert all(r.summary.completed == 150 for r in rows)
    on = [r for r in rows if r.part == "grid" and r.slice_tokens]
    assert on and all(r.slices_per_request > 1 for r in on)
    text = slicing_bench.markdown(rows, best)
    assert f"whole requests vs S = {best['tiny']}" in text
    assert len(slicing_bench.plot(rows, tmp_path)) == 2
