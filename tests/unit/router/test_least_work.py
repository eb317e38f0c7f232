"""least_work: ranking by estimated engine work, and the pending-prefill accounting it reads."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from flotilla.api.routing import (
    DECODE_CONTEXT_TOKENS,
    DEFAULT_DECODE_TOKEN_S,
    DEFAULT_PREFILL_TOKEN_S,
    LeastWorkParams,
)
from flotilla.profiles import load_profile
from flotilla.router.admission import Admission
from flotilla.router.instances import InstanceSpec, InstanceTable
from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies import InstanceView, RequestFeatures, Snapshot, default_registry
from flotilla.router.policies.least_work import LeastWork
from flotilla.router.policy_book import PolicyBook


def req(prompt: int = 1000, hashes: tuple[int, ...] = ()) -> RequestFeatures:
    return RequestFeatures(
        model="m", prompt_tokens=prompt, prefix_hashes=hashes, predicted_output_tokens=50.0
    )


def view(
    id: str, *, pending: int = 0, remaining: float = 0.0, inflight: int = 0, est: float = 0.0
) -> InstanceView:
    return InstanceView(
        id=id,
        inflight=inflight,
        est_requests=max(est, float(inflight)),
        pending_prefill_tokens=pending,
        predicted_remaining_tokens=remaining,
    )


def ids(ranked: list[InstanceView]) -> list[str]:
    return [v.id for v in ranked]


def test_defaults_are_the_h100_profile_costs() -> None:
    c = load_profile("h100-llama3-8b").coefficients
    assert pytest.approx(c.prefill_token_s + c.compute_token_s, rel=1e-3) == DEFAULT_PREFILL_TOKEN_S
    decode = c.decode_seq_s + c.kv_token_s * DECODE_CONTEXT_TOKENS
    assert pytest.approx(decode, rel=1e-3) == DEFAULT_DECODE_TOKEN_S


def test_same_request_count_less_prefill_ahead_wins() -> None:
    policy = LeastWork(LeastWorkParams())
    # Both run 2 requests: a's are still prefilling 9k-token prompts, b's are decoding their last tokens.
    a = view("a", pending=18_000, remaining=100.0, inflight=2)
    b = view("b", pending=0, remaining=100.0, inflight=2)
    assert ids(policy.rank(req(), Snapshot((a, b)), random.Random(0))) == ["b", "a"]


def test_prefill_and_decode_are_weighed_by_their_engine_seconds() -> None:
    a = view("a", pending=5000, inflight=1)  # 5000 x 21 us = 0.105 s
    b = view("b", remaining=1000.0, inflight=1)  # 1000 x 120 us = 0.12 s
    snap = Snapshot((a, b))
    assert ids(LeastWork(LeastWorkParams()).rank(req(), snap, random.Random(0))) == ["a", "b"]
    # Decode made cheap (a short context): b's decode is now less work than a's prefill.
    cheap = LeastWork(LeastWorkParams(decode_token_s=1e-5))
    assert ids(cheap.rank(req(), snap, random.Random(0))) == ["b", "a"]
    assert LeastWork(LeastWorkParams()).work(a) == pytest.approx(5000 * DEFAULT_PREFILL_TOKEN_S)


def test_requests_only_the_scrape_shows_are_charged_as_decode_work() -> None:
    policy = LeastWork(LeastWorkParams(foreign_request_tokens=200.0))
    other_routers = view("a", est=3.0)  # nothing of ours, 3 requests of other routers
    ours = view("b", remaining=500.0, inflight=1)
    assert policy.work(other_routers) == pytest.approx(600 * DEFAULT_DECODE_TOKEN_S)
    assert ids(policy.rank(req(), Snapshot((other_routers, ours)), random.Random(0))) == ["b", "a"]


def test_equal_work_is_shared_at_random_and_choices_samples() -> None:
    policy = LeastWork(LeastWorkParams())
    snap = Snapshot(tuple(view(f"i{k}") for k in range(4)))
    firsts = {policy.rank(req(), snap, random.Random(seed))[0].id for seed in range(40)}
    assert firsts == {"i0", "i1", "i2", "i3"}
    # Power of two choices: the loaded instance can never win a pair draw, the idle ones can.
    two = LeastWork(LeastWorkParams(choices=2))
    loaded = Snapshot((view("busy", pending=50_000), view("idle1"), view("idle2")))
    assert all(two.rank(req(), loaded, random.Random(s))[0].id != "busy" for s in range(40))


def test_prefix_match_credits_the_prefill_a_cached_prompt_saves() -> None:
    policy = LeastWork(LeastWorkParams(prefix_match=True))
    hashes = tuple(range(1, 9))
    policy.observe(req(8000, hashes), "holder")
    # The holder is busier by 2000 prefill tokens, but holds all of this 8000-token prompt.
    holder, other = view("holder", pending=2000, inflight=1), view("other")
    assert ids(policy.rank(req(8000, hashes), Snapshot((other, holder)), random.Random(0))) == [
        "holder",
        "other",
    ]
    # Busier by more than the prefill it saves: least work wins again.
    swamped = view("holder", pending=20_000, inflight=3)
    assert ids(policy.rank(req(8000, hashes), Snapshot((other, swamped)), random.Random(0))) == [
        "other",
        "holder",
    ]
    # A half match saves half the prompt's prefill.
    assert policy.own_prefill(req(8000, (*hashes[:4], 99, 98, 97, 96)), holder) == pytest.approx(
        4000 * DEFAULT_PREFILL_TOKEN_S
    )


def test_without_prefix_match_the_index_stays_empty_and_is_ignored() -> None:
    policy = LeastWork(LeastWorkParams())
    policy.observe(req(8000, (1, 2, 3)), "holder")
    assert len(policy.index) == 0
    snap = Snapshot((view("holder", pending=2000, inflight=1), view("other")))
    assert ids(policy.rank(req(8000, (1, 2, 3)), snap, random.Random(0))) == ["other", "holder"]


def test_registry_builds_it_and_rejects_unknown_params() -> None:
    registry = default_registry()
    assert "least_work" in registry.names()
    built = registry.build("least_work", {"prefill_token_s": 1e-5, "prefix_match": True})
    assert isinstance(built, LeastWork) and built.params.prefix_match
    with pytest.raises(ValidationError):
        registry.build("least_work", {"prefill_weight": 1.0})


async def test_admission_counts_prompts_as_pending_until_the_first_token() -> None:
    table = InstanceTable(default_max_inflight=8)
    table.update([InstanceSpec(id="i0", url="http://x0", model="m")])
    adm = Admission(
        table,
        PolicyBook(default_registry(), "least_work", {}),
        RouterMetrics(CollectorRegistry()),
        rng=random.Random(0),
    )
    record = table.get("i0")
    assert record is not None
    first = await adm.acquire(req(900))
    second = await adm.acquire(req(400))
    assert record.pending_prefill == 1300 and record.view().pending_prefill_tokens == 1300
    first.progress(1)  # its first token: its prompt is prefilled
    assert record.view().pending_prefill_tokens == 400
    first.progress(5)
    assert record.pending_prefill == 400
    second.release()  # ended before any token (an error, a disconnect): its prompt leaves too
    first.release()
    assert record.pending_prefill == 0 and record.inflight == 0
