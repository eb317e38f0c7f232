"""Workload loaders on small slices of the real shared data, and load scaling."""

import json

import numpy as np
import pytest

from flotilla.profiles import StepTimeProfile
from flotilla.sim import workloads
from flotilla.sim.capacity import instance_capacity
from flotilla.sim.request import SimRequest, prefix_units, router_prefix_hashes

needs_data = pytest.mark.skipif(
    not workloads.TRACES["azure_conv"].exists(), reason="../shared/data is not present"
)


@needs_data
def test_mooncake_conversation_slice_keeps_lengths_prefixes_and_sessions() -> None:
    w = workloads.load("mooncake_conversation", max_model_len=131072, limit=600)
    rows = [json.loads(line) for line in workloads.TRACES["mooncake_conversation"].open().readlines()[:600]]
    assert len(w.requests) == 600
    assert [r.prompt_tokens for r in w.requests] == [row["input_length"] for row in rows]
    assert [r.output_tokens for r in w.requests] == [max(1, row["output_length"]) for row in rows]
    assert w.requests[5].arrival == rows[5]["timestamp"] / 1000
    assert w.sessions > 0
    for r in w.requests:
        if r.parent is not None:
            parent = w.requests[r.parent]
            assert parent.arrival <= r.arrival
            assert r.prefix_ids[: len(parent.prefix_ids) - 1] == parent.prefix_ids[:-1]


@needs_data
def test_clipping_fits_the_context_and_is_counted() -> None:
    w = workloads.load("mooncake_synthetic", max_model_len=8192, limit=300)
    assert w.clipped > 0
    assert all(r.prompt_tokens + r.output_tokens < 8192 for r in w.requests)
    assert all(len(r.prefix_ids) == -(-r.prompt_tokens // 512) for r in w.requests)


@needs_data
def test_azure_slice() -> None:
    w = workloads.load("azure_conv", max_model_len=131072, limit=100)
    assert len(w.requests) == 100
    assert w.requests[0].arrival == 0.0
    assert (np.diff([r.arrival for r in w.requests]) >= 0).all()
    assert (w.requests[0].prompt_tokens, w.requests[0].output_tokens) == (374, 44)


@needs_data
def test_castillo_uses_held_out_prompts_and_a_sampled_true_length() -> None:
    w = workloads.load("castillo_llama", max_model_len=131072, limit=50, seed=3)
    rows = {}
    for line in workloads.TRACES["castillo_llama"].open():
        row = json.loads(line)
        rows[row["prompt_text"]] = row
    for r in w.requests:
        row = rows[r.text]
        assert row["split"] == "validate"  # the held-out part is drawn from the authors' validate split
        assert r.output_tokens in [max(1, s) for s in row["output_sizes"]]
        assert r.prompt_tokens == row["input_size"]
    assert workloads.load("castillo_llama", max_model_len=131072, limit=50, seed=3) == w


def test_at_rate_hits_the_mean_rate_and_keeps_order() -> None:
    reqs = [SimRequest(i, t, 10, 10) for i, t in enumerate([5.0, 5.0, 6.0, 9.0, 15.0])]
    scaled = workloads.at_rate(reqs, 2.0)
    times = [r.arrival for r in scaled]
    assert times[0] == 0.0
    assert (len(times) - 1) / times[-1] == pytest.approx(2.0)
    assert times == sorted(times)


def test_in_bursts_compresses_runs_of_the_trace_and_keeps_the_mean_rate() -> None:
    # Uneven arrivals (the trace's own gaps) over 400 requests, listed out of arrival order.
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.exponential(1.0, 400))
    reqs = [SimRequest(i, float(t), 10, 10) for i, t in reversed(list(enumerate(times)))]
    bursty = workloads.in_bursts(reqs, rate=1.0, peak=4.0, burst_s=10.0)
    assert [r.id for r in bursty] == [r.id for r in reqs]  # same requests, same list order
    by_time = sorted(bursty, key=lambda r: r.arrival)
    assert [r.id for r in by_time] == sorted(r.id for r in reqs)  # the trace's order of arrival
    t = np.array([r.arrival for r in by_time])
    # 40 requests per burst at 4 req/s, then a gap of 30 s: one cycle of 40 requests per 40 s.
    bursts = t.reshape(10, 40)
    for b in bursts:
        assert 39 / (b[-1] - b[0]) == pytest.approx(4.0, rel=0.35)  # the trace's gaps, rescaled
    cycles = bursts[1:, 0] - bursts[:-1, 0]
    assert cycles.mean() == pytest.approx(40.0, rel=0.05)
    assert (bursts[1:, 0] - bursts[:-1, -1]).min() > 25.0  # idle between bursts
    with pytest.raises(ValueError, match="rate < peak"):
        workloads.in_bursts(reqs, rate=2.0, peak=2.0, burst_s=10.0)


def test_extend_to_repeats_without_sharing_prefixes() -> None:
    base = workloads.Workload(
        "w", [SimRequest(0, 0.0, 600, 5, (1, 2)), SimRequest(1, 1.0, 700, 5, (1, 3), parent=0)]
    )
    big = workloads.extend_to(base, 5)
    assert [r.id for r in big.requests] == [0, 1, 2, 3, 4]
    assert big.requests[2].arrival > big.requests[1].arrival
    assert not set(big.requests[2].prefix_ids) & {1, 2, 3}
    assert big.requests[3].parent == 2
    assert big.sessions == 2


def test_prefix_units_and_router_hashes_follow_shared_ids() -> None:
    a = SimRequest(0, 0.0, 1100, 5, (7, 8, 9))
    b = SimRequest(1, 0.0, 1090, 5, (7, 8, 4))
    ua, ub = prefix_units(a, 16), prefix_units(b, 16)
    assert [u.blocks for u in ua] == [32, 32, 4]
    assert ua[:2] == ub[:2] and ua[2] != ub[2]
    assert router_prefix_hashes(a) == router_prefix_hashes(b)
    assert router_prefix_hashes(SimRequest(2, 0.0, 1100, 5)) != router_prefix_hashes(
        SimRequest(3, 0.0, 1100, 5)
    )


def test_capacity_grows_with_shorter_requests(profile: StepTimeProfile) -> None:
    short = [SimRequest(i, 0.0, 100, 20) for i in range(10)]
    long = [SimRequest(i, 0.0, 2000, 400) for i in range(10)]
    assert instance_capacity(short, profile, profile.limits) > 5 * instance_capacity(
        long, profile, profile.limits
    )


def test_samples_are_consecutive_slices() -> None:
    base = workloads.Workload("w", [SimRequest(i, float(i), 10, 5) for i in range(10)])
    second = workloads.sample(base, 4, 1)
    assert [r.id for r in second.requests] == [4, 5, 6, 7]
    assert second.sample == 1
    third = workloads.sample(base, 4, 2)
    assert [r.id for r in third.requests] == [8, 9, 10, 11]  # past the end: the trace again
