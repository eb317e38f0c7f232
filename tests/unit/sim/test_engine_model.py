"""The engine model (run by the simulator and by flotilla.enginesim): invariants and semantics."""

import random

import pytest

from flotilla.profiles import EngineLimits, StepTimeProfile
from flotilla.sim.engine import EngineModel, Seq
from flotilla.sim.request import SimRequest, prefix_units


def run_alone(engine: EngineModel, seqs: list[Seq]) -> list[tuple[int, int, int, int]]:
    """Add everything at once and step to the end, checking KV invariants after every step."""
    for s in seqs:
        engine.add(s)
    works = []
    now = 0.0
    for _ in range(100_000):
        seconds = engine.begin_step(now)
        if seconds == 0.0:
            break
        works.append(engine.last_work)
        assert 0 <= engine.kv.used_blocks() <= engine.kv.num_blocks
        for s in engine.running:
            assert engine.computed_tokens(s) <= s.nblocks * engine.bs
        now += seconds
        engine.end_step(now)
        assert len(engine.running) <= engine.max_seqs
    assert engine.idle
    return works


def shared_prefix_requests(n: int, seed: int) -> tuple[list[SimRequest], list[list[int]]]:
    """Requests whose prompts share leading 16-token blocks, as prefix ids and as real token lists."""
    rng = random.Random(seed)
    shared = [rng.randrange(256) for _ in range(160)]
    reqs, prompts = [], []
    for i in range(n):
        own = rng.choice([0, 32, 64, 100, 160])
        prompt = shared[:own] + [rng.randrange(256) for _ in range(rng.randrange(1, 120))]
        ids = tuple(b if (b + 1) * 16 <= own else 1000 + 100 * i + b for b in range(-(-len(prompt) // 16)))
        reqs.append(
            SimRequest(i, 0.0, len(prompt), rng.randrange(1, 40), prefix_ids=ids, prefix_block_tokens=16)
        )
        prompts.append(prompt)
    return reqs, prompts


def model_seqs(reqs: list[SimRequest], bs: int) -> list[Seq]:
    return [Seq(r.id, r.prompt_tokens, r.output_tokens, prefix_units(r, bs)) for r in reqs]


def test_preempts_when_kv_is_short_and_still_completes_everything(profile: StepTimeProfile) -> None:
    limits = EngineLimits(max_num_seqs=16, max_num_batched_tokens=256, block_size=16, kv_cache_blocks=40)
    rng = random.Random(3)
    reqs = [SimRequest(i, 0.0, rng.randrange(20, 200), rng.randrange(50, 300)) for i in range(30)]
    engine = EngineModel(profile, limits)
    seqs = model_seqs(reqs, 16)
    run_alone(engine, seqs)
    assert engine.preemptions > 0
    assert sum(s.preemptions for s in seqs) == engine.preemptions
    assert [s.out for s in seqs] == [r.output_tokens for r in reqs]
    assert engine.kv.used_blocks() == 0
    assert engine.generated == sum(r.output_tokens for r in reqs)


def test_priority_engine_preempts_the_longest_and_admits_the_shortest_first(profile: StepTimeProfile) -> None:
    limits = EngineLimits(max_num_seqs=1, max_num_batched_tokens=256, block_size=16, kv_cache_blocks=400)
    engine = EngineModel(profile, limits, priority=True)
    seqs = [Seq(i, 20, out, priority=float(out)) for i, out in enumerate([50, 5, 20])]
    for s in seqs:
        engine.add(s)
    order = []
    now = 0.0
    while (seconds := engine.begin_step(now)) > 0:
        now += seconds
        order += [s.idx for s in engine.end_step(now)[1]]
    assert order == [1, 2, 0]


def test_prefix_hit_when_a_prompt_repeats(profile: StepTimeProfile) -> None:
    r = SimRequest(0, 0.0, 300, 4, prefix_ids=(7,), prefix_block_tokens=512)
    engine = EngineModel(profile, profile.limits)
    first = Seq(0, 300, 4, prefix_units(r, 16))
    run_alone(engine, [first])
    second = Seq(1, 300, 4, prefix_units(r, 16))
    works = run_alone(engine, [second])
    # 18 full blocks (288 tokens) are cached; the other 12 prompt tokens are computed again.
    assert second.hit_tokens == 288
    assert works[0][0] == 12
    assert engine.prefix_hits == 288


def test_step_times_follow_the_profile(profile: StepTimeProfile) -> None:
    engine = EngineModel(profile, profile.limits)
    engine.add(Seq(0, 700, 3))
    got = []
    now = 0.0
    while (seconds := engine.begin_step(now)) > 0:
        got.append(seconds)
        now += seconds
        engine.end_step(now)
    step = profile.step_time
    assert got == [
        step(prefill_tokens=512, prefill_attention_pairs=512 * 512),
        step(prefill_tokens=188, prefill_attention_pairs=188 * 700),
        step(decode_seqs=1, kv_tokens_read=701),
        step(decode_seqs=1, kv_tokens_read=702),
    ]


def test_predicted_remaining_is_the_sum_the_router_would_keep(profile: StepTimeProfile) -> None:
    engine = EngineModel(profile, profile.limits)
    seqs = [Seq(0, 50, 10, mark=4.5), Seq(1, 60, 3, mark=7.0), Seq(2, 600, 20, mark=20.0)]
    for s in seqs:
        engine.add(s)
    now = 0.0
    while (seconds := engine.begin_step(now)) > 0:
        now += seconds
        engine.end_step(now)
        outs = {s.idx: s.out + (engine.k - s.k0 if s.decoding else 0) for s in seqs}
        live = [s for s in seqs if s in engine.running or outs[s.idx] < s.target]
        expected = sum(max(0.0, s.mark - outs[s.idx]) for s in live)
        assert abs(engine.predicted_remaining - expected) < 1e-9
    assert abs(engine.predicted_remaining) < 1e-9


def test_shared_prefixes_under_kv_pressure_evict_and_preempt_but_never_overflow(
    profile: StepTimeProfile,
) -> None:
    limits = EngineLimits(max_num_seqs=12, max_num_batched_tokens=256, block_size=16, kv_cache_blocks=120)
    reqs, _ = shared_prefix_requests(80, seed=4)
    reqs = [SimRequest(r.id, 0.0, r.prompt_tokens, r.output_tokens * 5, r.prefix_ids, 16) for r in reqs]
    engine = EngineModel(profile, limits)
    seqs = model_seqs(reqs, 16)
    run_alone(engine, seqs)
    assert engine.preemptions > 0
    assert engine.prefix_hits > 0
    assert [s.out for s in seqs] == [r.output_tokens for r in reqs]
    assert engine.kv.used_blocks() == 0
    assert engine.kv.cached_units > 0  # released prefixes stay cached until evicted


def test_limits_the_fast_path_cannot_honour_are_refused(profile: StepTimeProfile) -> None:
    with pytest.raises(ValueError, match="max_num_seqs"):
        EngineModel(profile, EngineLimits(max_num_seqs=64, max_num_batched_tokens=32))
