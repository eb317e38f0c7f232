"""Prompts of exact length, shared prefixes where the trace shares blocks, none across salts."""

from __future__ import annotations

from flotilla.enginesim.tokenizer import Tokenizer
from flotilla.loadgen.workload import plan, poisson, trace_window
from flotilla.sim.request import SimRequest

TOKENIZER = Tokenizer(num_words=1024)


def sim(
    i: int, at: float, prompt: int, blocks: tuple[int, ...] = (), parent: int | None = None
) -> SimRequest:
    return SimRequest(i, at, prompt, 7, prefix_ids=blocks, parent=parent)


def test_prompts_have_the_exact_token_count_and_share_equal_blocks() -> None:
    reqs = [sim(0, 5.0, 1000, (1, 2)), sim(1, 6.0, 1300, (1, 2, 3), parent=0), sim(2, 7.0, 700, (9, 2))]
    planned = plan(reqs, salt=1)
    assert [p.at_s for p in planned] == [0.0, 1.0, 2.0]
    ids = [TOKENIZER.encode(p.prompt) for p in planned]
    assert [len(x) for x in ids] == [1000, 1300, 700]
    assert ids[1][:1000] == ids[0]  # the next turn extends the first
    assert ids[2][:512] != ids[0][:512] and ids[2][512:700] == ids[0][512:700]  # same id, same text
    assert planned[1].parent == 0 and planned[1].max_tokens == 7


def test_another_salt_shares_nothing_and_unshared_requests_are_disjoint() -> None:
    reqs = [sim(0, 0.0, 600, (1,)), sim(1, 0.5, 600)]
    a, b = plan(reqs, salt=1), plan(reqs, salt=2)
    assert a[0].prompt != b[0].prompt and len(TOKENIZER.encode(b[0].prompt)) == 600
    azure = plan([sim(0, 0.0, 600), sim(1, 0.1, 600)], salt=1)
    first, second = (TOKENIZER.encode(p.prompt) for p in azure)
    assert first[:16] != second[:16]


def test_poisson_rate_and_trace_window() -> None:
    reqs = poisson(rate=10.0, count=2000, prompt_tokens=8, output_tokens=4, seed=0)
    span = reqs[-1].arrival - reqs[0].arrival
    assert 9.0 < len(reqs) / span < 11.0
    trace = [sim(i, float(i), 10, parent=i - 1 if i % 2 else None) for i in range(10)]
    window = trace_window(trace, duration_s=4.0, skip_s=3.0)
    assert [r.id for r in window] == [3, 4, 5, 6]
    assert window[0].parent is None  # its first turn (2) is outside the window
    assert window[2].parent == 4
    faster = trace_window(trace, duration_s=4.0, rate=2.0, skip_s=1.0)  # 8 requests, 0.5 s apart
    assert [r.id for r in faster] == list(range(1, 9))
    assert [r.arrival for r in faster][:3] == [0.0, 0.5, 1.0]
