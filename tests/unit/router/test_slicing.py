"""Slice-level scheduling: the pure decisions."""

import pytest

from flotilla.router.policies import InstanceView, RequestFeatures
from flotilla.router.slicing.continuation import Generation, SseParser, parse_event
from flotilla.router.slicing.decisions import (
    RebalanceParams,
    StopScanner,
    continues,
    move_gain_ms,
    place_next_slice,
    slice_budget,
    unsliceable_reason,
)

P = RebalanceParams(decode_seq_ms=0.05, prefill_token_ms=0.05, min_gap_requests=2)


def view(i: str, load: float) -> InstanceView:
    return InstanceView(id=i, est_requests=load)


def test_stay_when_loads_are_close() -> None:
    ranked = [view("b", 3), view("a", 4)]
    out = place_next_slice("a", ranked, slice_tokens=64, context_tokens=500, params=P)
    assert [v.id for v in out] == ["a", "b"]


def test_move_when_gap_pays_for_the_reprefill() -> None:
    ranked = [view("b", 1), view("a", 30), view("c", 2)]
    # gain = 64 * 29 * 0.05 = 92.8 ms > 500 * 0.05 = 25 ms of re-prefill
    out = place_next_slice("a", ranked, slice_tokens=64, context_tokens=500, params=P)
    assert out[0].id == "b" and {v.id for v in out} == {"a", "b", "c"}


def test_long_context_stays_despite_gap() -> None:
    ranked = [view("b", 1), view("a", 30)]
    # gain 92.8 ms < 8000 * 0.05 = 400 ms: moving would cost more than it saves
    assert place_next_slice("a", ranked, slice_tokens=64, context_tokens=8000, params=P)[0].id == "a"
    assert move_gain_ms(view("a", 30), view("b", 1), slice_tokens=64, context_tokens=8000, params=P) < 0


def test_first_slice_or_full_instance_keeps_policy_choice() -> None:
    ranked = [view("b", 5), view("c", 1)]
    assert [v.id for v in place_next_slice(None, ranked, slice_tokens=8, context_tokens=8, params=P)] == [
        "b",
        "c",
    ]
    assert [v.id for v in place_next_slice("a", ranked, slice_tokens=8, context_tokens=8, params=P)] == [
        "b",
        "c",
    ]


def test_budget_and_continuation() -> None:
    assert slice_budget(16, None) == 16 and slice_budget(16, 5) == 5 and slice_budget(16, 100) == 16
    assert continues("length", 16, 16, 10)
    assert not continues("length", 16, 16, 0)  # the client's own limit reached
    assert not continues("length", 9, 16, 10)  # the engine's context limit, not the slice's
    assert not continues("stop", 3, 16, 10)
    assert continues("length", 16, 16, None)


@pytest.mark.parametrize(
    ("kind", "body", "reason"),
    [
        ("completion", {"prompt": "x"}, None),
        ("completion", {"prompt": [1, 2, 3], "stop": ["a", "bc"]}, None),
        ("completion", {"prompt": "x", "n": 2}, "n > 1"),
        ("completion", {"prompt": "x", "logprobs": 1}, "`logprobs` is set"),
        ("completion", {"prompt": "x", "seed": 3}, "`seed` is set"),
        ("completion", {"prompt": ["a", "b"]}, "the prompt is a batch"),
        ("chat", {"messages": [], "logprobs": True}, "`logprobs` is set"),
        ("chat", {"messages": [], "response_format": {"type": "json_object"}}, "`response_format` is set"),
        ("chat", {"messages": [], "n": 1, "seed": None}, None),
    ],
)
def test_unsliceable(kind: str, body: dict[str, object], reason: str | None) -> None:
    assert unsliceable_reason(kind, body) == reason


def test_stop_scanner_across_feeds() -> None:
    s = StopScanner(["END", "xy"])
    assert s.feed("hello E") == ("hello", None)  # holds len("END") - 1 characters back
    assert s.feed("N") == (" ", None)
    assert s.feed("D and more") == ("", "END")
    s = StopScanner(["END"])
    out = [s.feed(t) for t in ("ab", "cE", "N", "Dzz")]
    assert "".join(o for o, _ in out) == "abc" and out[-1][1] == "END"
    s = StopScanner([])
    assert s.feed("abc") == ("abc", None) and s.flush() == ""
    s = StopScanner(["stop"])
    assert s.feed("nost") == ("n", None) and s.flush() == "ost"


def test_stop_scanner_earliest_match_wins() -> None:
    s = StopScanner(["zz", "b"])
    assert s.feed("azzb") == ("a", "zz")


def test_sse_parser_handles_split_events() -> None:
    p = SseParser()
    assert p.feed(b'data: {"a": 1}\n\ndata: {"b"') == [{"a": 1}]
    assert p.feed(b": 2}\n\ndata: [DONE]\n\n") == [{"b": 2}]


def test_parse_event_and_continuation_body() -> None:
    ev = {
        "choices": [
            {"index": 0, "text": "hi", "token_ids": [5], "prompt_token_ids": [1, 2], "finish_reason": None}
        ]
    }
    assert parse_event("completion", ev) == ("hi", [5], None, None, [1, 2])
    chat = {"prompt_token_ids": [7], "choices": [{"delta": {"role": "assistant", "content": ""}}]}
    assert parse_event("chat", chat) == ("", [], None, None, [7])
    body = {
        "model": "m",
        "messages": [],
        "temperature": 0.5,
        "stop": ["x"],
        "max_completion_tokens": 50,
        "min_tokens": 20,
    }
    gen = Generation("chat", body, RequestFeatures("m", 3), 16, 50, StopScanner(["x"]))
    path, first = gen.slice_request(16)
    assert path == "/v1/chat/completions" and first["max_tokens"] == 16 and "stop" not in first
    assert "max_completion_tokens" not in first and first["min_tokens"] == 16
    gen.prompt_ids, gen.generated = [1, 2], [3] * 16
    path, cont = gen.slice_request(16)
    assert path == "/v1/completions" and cont["prompt"] == [1, 2] + [3] * 16
    assert cont["temperature"] == 0.5 and cont["min_tokens"] == 4 and "messages" not in cont
    assert cont["return_token_ids"] is True and cont["stream"] is True
