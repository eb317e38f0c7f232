import random
from collections import Counter

import pytest
from pydantic import ValidationError

from flotilla.router.policies import InstanceView, RequestFeatures, Snapshot, default_registry

REQ = RequestFeatures(model="m", prompt_tokens=100, max_tokens=50)


def snap(*views: InstanceView) -> Snapshot:
    return Snapshot(tuple(views))


def test_registry_validates_params_with_the_policys_model() -> None:
    reg = default_registry()
    assert reg.names() == [
        "kv_utilization",
        "least_request",
        "least_work",
        "predicted_load",
        "prefix_affinity",
        "round_robin",
    ]
    with pytest.raises(ValidationError):
        reg.build("least_request", {"choises": 2})  # extra="forbid" catches the typo
    with pytest.raises(KeyError):
        reg.build("nope")


def test_round_robin_cycles_in_id_order() -> None:
    rr = default_registry().build("round_robin")
    s = snap(InstanceView("b"), InstanceView("a"), InstanceView("c"))
    firsts = [rr.rank(REQ, s, random.Random(0))[0].id for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]


def test_least_request_global_best_with_random_ties() -> None:
    lr = default_registry().build("least_request", {"choices": 0})
    s = snap(
        InstanceView("a", est_requests=5),
        InstanceView("b", est_requests=1),
        InstanceView("c", est_requests=1),
    )
    picks = Counter(lr.rank(REQ, s, random.Random(i))[0].id for i in range(200))
    assert set(picks) == {"b", "c"} and min(picks.values()) > 60


def test_power_of_two_choices_never_picks_the_worst_and_spreads_over_the_rest() -> None:
    lr = default_registry().build("least_request", {"choices": 2})
    views = [InstanceView(str(i), est_requests=float(i)) for i in range(4)]
    rng = random.Random(1)
    picks = Counter(lr.rank(REQ, snap(*views), rng)[0].id for _ in range(2000))
    assert "3" not in picks
    # P(best of two random among 4 is i) = (3-i)/6: 1/2, 1/3, 1/6.
    assert picks["0"] / 2000 == pytest.approx(0.5, abs=0.05)
    assert picks["2"] / 2000 == pytest.approx(1 / 6, abs=0.04)


def test_kv_utilization_prefers_free_cache_and_penalises_queues() -> None:
    kv = default_registry().build("kv_utilization", {"choices": 0})
    s = snap(InstanceView("full", est_kv_usage=0.9), InstanceView("free", est_kv_usage=0.2))
    assert kv.rank(REQ, s, random.Random(0))[0].id == "free"
    s = snap(InstanceView("a", est_kv_usage=0.3, waiting=10), InstanceView("b", est_kv_usage=0.5))
    assert kv.rank(REQ, s, random.Random(0))[0].id == "b"


def test_predicted_load_weighs_remaining_tokens_not_request_counts() -> None:
    pl = default_registry().build("predicted_load", {"choices": 0})
    few_long = InstanceView("long", inflight=2, est_requests=2, predicted_remaining_tokens=4000)
    many_short = InstanceView("short", inflight=8, est_requests=8, predicted_remaining_tokens=400)
    assert pl.rank(REQ, snap(few_long, many_short), random.Random(0))[0].id == "short"
    lr = default_registry().build("least_request", {"choices": 0})
    assert lr.rank(REQ, snap(few_long, many_short), random.Random(0))[0].id == "long"
    # Requests only the scrape knows (other routers') are charged too.
    foreign = InstanceView("foreign", inflight=0, est_requests=10, predicted_remaining_tokens=0)
    idle = InstanceView("idle", predicted_remaining_tokens=300, inflight=1, est_requests=1)
    assert pl.rank(REQ, snap(foreign, idle), random.Random(0))[0].id == "idle"


def test_policies_return_empty_for_no_instances() -> None:
    reg = default_registry()
    for name in reg.names():
        assert reg.build(name).rank(REQ, Snapshot(()), random.Random(0)) == []
