import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from flotilla.enginesim.engine import Engine
from flotilla.enginesim.metrics import EngineMetrics
from flotilla.enginesim.sequence import SamplingParams, Sequence, TokenEvent
from flotilla.enginesim.textmodel import TextModel
from flotilla.enginesim.tokenizer import EOS_TOKEN_ID, Tokenizer
from flotilla.profiles import EngineLimits, StepCoefficients, StepTimeProfile

PROFILE = StepTimeProfile(
    name="t",
    model="m",
    hardware="none",
    source="unit test",
    coefficients=StepCoefficients(base_s=0.01, prefill_token_s=0.001, decode_seq_s=0.0001),
)


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


def make_engine(**limits: int) -> tuple[Engine, Recorder]:
    tok = Tokenizer()
    rec = Recorder()
    lim = EngineLimits(**limits)
    metrics = EngineMetrics(
        CollectorRegistry(), model_name="m", cache_info={"block_size": str(lim.block_size)}
    )
    engine = Engine(
        model=TextModel(tok, seed=0), tokenizer=tok, profile=PROFILE, limits=lim, metrics=metrics, sleep=rec
    )
    return engine, rec


def seq(prompt: list[int], max_tokens: int, index: int = 0, **params: object) -> Sequence:
    sink: asyncio.Queue[TokenEvent] = asyncio.Queue()
    p = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, **params)  # type: ignore[arg-type]
    return Sequence("r", index, prompt, p, sink, random.Random(0), 0.0)


async def drain(s: Sequence) -> list[TokenEvent]:
    out = []
    while True:
        ev = await asyncio.wait_for(s.sink.get(), 5)
        out.append(ev)
        if ev.finish_reason is not None:
            return out


async def test_batch_is_capped_by_max_num_seqs() -> None:
    engine, _ = make_engine(max_num_seqs=2)
    seqs = [seq([1, 2, 3], 5, i) for i in range(3)]
    for s in seqs:
        engine.add(s)
    assert engine.step_begin() > 0
    assert (engine.num_running, engine.num_waiting) == (2, 1)
    engine.step_end()
    assert [s.num_output for s in seqs] == [1, 1, 0], "the first two ran the step and sampled"


async def test_chunked_prefill_and_step_times_follow_the_profile() -> None:
    engine, rec = make_engine(max_num_batched_tokens=32, max_num_seqs=8)
    s = seq(list(range(100)), 3)
    engine.add(s)
    task = asyncio.create_task(engine.run())
    events = await drain(s)
    task.cancel()
    assert [len(e.token_ids) for e in events] == [1, 1, 1]
    assert events[-1].finish_reason == "length"
    # 100 prompt tokens in chunks of 32, 32, 32, 4 (the last samples the first token), then 2 decodes.
    expected = [0.01 + 0.001 * n for n in (32, 32, 32, 4)] + [0.01 + 0.0001] * 2
    assert rec.sleeps == pytest.approx(expected)


async def test_prefix_cache_hits_for_a_repeated_prompt() -> None:
    engine, _ = make_engine(block_size=4)
    prompt = list(range(20))
    task = asyncio.create_task(engine.run())
    a = seq(prompt, 2)
    engine.add(a)
    await drain(a)
    b = seq(prompt, 2)
    engine.add(b)
    await drain(b)
    task.cancel()
    assert engine.metrics.prefix_queries._value.get() == 40
    # 19 tokens may hit (one is always recomputed): four full blocks of 4.
    assert engine.metrics.prefix_hits._value.get() == 16
    assert a.output_ids == b.output_ids


async def test_preemption_when_kv_blocks_run_out_and_everyone_still_finishes() -> None:
    engine, _ = make_engine(block_size=4, kv_cache_blocks=8, max_model_len=32)
    seqs = [seq([i + 1] * 8, 12, i) for i in range(3)]  # each needs 5 blocks at the end
    task = asyncio.create_task(engine.run())
    for s in seqs:
        engine.add(s)
    results = [await drain(s) for s in seqs]
    task.cancel()
    assert all(len(r) == 12 for r in results)
    assert engine.metrics.preemptions._value.get() > 0
    assert engine.kv_usage == 0.0


async def test_stop_string_truncates_and_holds_back_text() -> None:
    engine, _ = make_engine()
    tok = engine.tokenizer
    probe = seq(tok.encode("x"), 6)
    engine.add(probe)
    task = asyncio.create_task(engine.run())
    free_run = await drain(probe)
    text = "".join(e.text for e in free_run)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    s = seq(tok.encode("x"), 6, stop=(stop,))
    engine.add(s)
    events = await drain(s)
    task.cancel()
    assert events[-1].finish_reason == "stop" and events[-1].stop_reason == stop
    assert "".join(e.text for e in events) == text[: text.find(stop)]


async def test_abort_frees_blocks_and_stops_output() -> None:
    engine, _ = make_engine()
    s = seq([1, 2, 3], 1000)
    engine.add(s)
    task = asyncio.create_task(engine.run())
    await s.sink.get()
    engine.abort(s)
    await asyncio.sleep(0.01)
    task.cancel()
    assert engine.num_running == 0 and engine.kv_usage == 0.0


async def test_eos_ends_generation_when_allowed() -> None:
    engine, _ = make_engine()
    task = asyncio.create_task(engine.run())
    sink: asyncio.Queue[TokenEvent] = asyncio.Queue()
    s = Sequence("r", 0, [5, 6, 7], SamplingParams(max_tokens=5000, temperature=0), sink, random.Random(0), 0)
    engine.add(s)
    events = await drain(s)
    task.cancel()
    assert events[-1].finish_reason == "stop" and events[-1].token_ids == (EOS_TOKEN_ID,)
    assert events[-1].stop_reason is None
    assert engine.num_running == 0 and engine.kv_usage == 0.0, "an EOS frees the sequence's blocks"


async def test_an_answer_repeated_in_the_next_prompt_hits_the_cache() -> None:
    """Blocks filled with generated tokens are cached too (as vLLM caches every full block): the
    next turn of a conversation, whose prompt holds the previous answer, finds them."""
    engine, _ = make_engine(block_size=4)
    task = asyncio.create_task(engine.run())
    first = seq(list(range(8)), 12)
    engine.add(first)
    await drain(first)
    hits_before = engine.metrics.prefix_hits._value.get()
    follow_up = seq([*first.tokens, 99, 98, 97], 2, 1)  # 8 prompt + 12 output + 3 new tokens
    engine.add(follow_up)
    await drain(follow_up)
    task.cancel()
    # The first request computed 19 tokens (as on vLLM, the last sampled token's KV never is):
    # four full blocks, the prompt's two and two of its answer.
    assert engine.metrics.prefix_hits._value.get() - hits_before == 16


async def test_abort_during_a_step_takes_effect_at_its_end() -> None:
    engine, _ = make_engine()
    s = seq([1, 2, 3], 1000)
    engine.add(s)
    assert engine.step_begin() > 0
    engine.abort(s)  # the model changes only between steps
    assert engine.num_running == 1
    engine.step_end()
    assert engine.num_running == 0 and engine.kv_usage == 0.0
    assert s.num_output == 0 and s.sink.empty(), "an aborted sequence emits nothing"


def test_max_num_seqs_above_the_token_budget_is_refused_as_vllm_does() -> None:
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        make_engine(max_num_seqs=64, max_num_batched_tokens=32)
