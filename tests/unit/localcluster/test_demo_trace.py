"""The demo's trace fitting and prompts: the window, the model split, exact prompt lengths and
shared prefixes where the trace shares blocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flotilla.enginesim.tokenizer import FIRST_WORD_ID, Tokenizer
from flotilla.localcluster.demo_trace import (
    BLOCK_TOKENS,
    ENGINESIM_VOCAB,
    VLLM_VOCAB,
    PromptBuilder,
    TraceFit,
    TraceRequest,
    load_trace,
)


def write_trace(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(ts: int, inp: int, out: int, hashes: list[int]) -> dict[str, object]:
    return {"timestamp": ts, "input_length": inp, "output_length": out, "hash_ids": hashes}


def test_window_rate_scale_caps_and_model_split(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "t.jsonl",
        [
            row(0, 100, 10, [0, 1]),
            row(500, 50_000, 5000, [0, 2, 3]),
            row(900, 10, 1, [0, 1, 7]),  # same conversation as the first: same model
            row(2500, 10, 1, [4]),  # outside a 2 s window at rate 1
        ],
    )
    fit = TraceFit(duration_s=2.0, max_input_tokens=1000, max_output_tokens=100)
    reqs = load_trace(trace, ["a", "b"], fit)
    assert [r.at_s for r in reqs] == [0.0, 0.5, 0.9]
    assert reqs[1].input_tokens == 1000 and reqs[1].output_tokens == 100
    assert reqs[0].model == reqs[2].model == "b" and reqs[1].model == "a"
    fast = load_trace(trace, ["a", "b"], TraceFit(duration_s=2.0, rate_scale=2.0))
    assert len(fast) == 4 and fast[-1].at_s == 1.25


@pytest.mark.parametrize("vocab", [ENGINESIM_VOCAB, VLLM_VOCAB])
def test_prompts_have_exact_lengths_and_share_prefixes(vocab: tuple[int, int]) -> None:
    builder = PromptBuilder(vocab)
    a = TraceRequest(0.0, "m", 2 * BLOCK_TOKENS + 7, 1, (0, 1, 2))
    b = TraceRequest(0.0, "m", 3 * BLOCK_TOKENS, 1, (0, 1, 9))
    short = TraceRequest(0.0, "m", 5, 1, ())
    long_ = TraceRequest(0.0, "m", 3 * BLOCK_TOKENS, 1, (5,))
    ids_a, ids_b = builder.prompt(a), builder.prompt(b)
    assert len(ids_a) == a.input_tokens and len(ids_b) == b.input_tokens
    assert ids_a[: 2 * BLOCK_TOKENS] == ids_b[: 2 * BLOCK_TOKENS]
    assert ids_a[2 * BLOCK_TOKENS :] != ids_b[2 * BLOCK_TOKENS : 2 * BLOCK_TOKENS + 7]
    assert len(builder.prompt(short)) == 5
    assert len(builder.prompt(long_)) == 3 * BLOCK_TOKENS
    assert all(vocab[0] <= t < vocab[1] for t in ids_a + ids_b)
    assert builder.prompt(a) == PromptBuilder(vocab).prompt(a)  # deterministic across runs


def test_enginesim_prompts_are_its_words() -> None:
    ids = PromptBuilder().prompt(TraceRequest(0.0, "m", 64, 1, (3,)))
    assert Tokenizer().is_valid(ids) and all(t >= FIRST_WORD_ID for t in ids)


def test_demo_fits_the_trace_to_the_engine_unless_told() -> None:
    from flotilla.localcluster.demo import DemoOptions

    sim, vllm = DemoOptions().fit, DemoOptions(engine="vllm").fit
    assert (sim.rate_scale, sim.max_input_tokens, sim.max_output_tokens) == (1.0, 8192, 1024)
    assert (vllm.rate_scale, vllm.max_input_tokens, vllm.max_output_tokens) == (0.5, 1024, 128)
    told = DemoOptions(engine="vllm", rate_scale=2.0, max_input_tokens=300, duration_s=5.0).fit
    assert (told.rate_scale, told.max_input_tokens, told.duration_s) == (2.0, 300, 5.0)
