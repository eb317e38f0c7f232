import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.router.wait_queue import OrderedQueue, QueueOrderParams


class Waiter:
    """A stand-in for the router's waiter: identity-hashed, carries its predicted length."""

    def __init__(self, name: object, score: float, arrived: float = 0.0) -> None:
        self.name = name
        self.score = score
        self.arrived = arrived

    def __repr__(self) -> str:
        return f"Waiter({self.name!r})"


def make(aging: float, starvation: float) -> OrderedQueue[Waiter]:
    return OrderedQueue(lambda w: w.score, QueueOrderParams(aging_per_s=aging, starvation_s=starvation))


def names(ws: list[Waiter]) -> list[object]:
    return [w.name for w in ws]


def test_shortest_predicted_first_without_aging() -> None:
    q = make(aging=0, starvation=100)
    for name, score in [("long", 900.0), ("short", 10.0), ("mid", 500.0)]:
        q.push(Waiter(name, score), now=0.0)
    assert names([q.pop(1.0) for _ in range(3)]) == ["short", "mid", "long"]
    with pytest.raises(IndexError):
        q.pop(2.0)
    assert q.peek(2.0) is None


def test_aging_lets_an_old_long_request_pass_newer_short_ones() -> None:
    q = make(aging=1.0, starvation=100)
    q.push(Waiter("old-long", 5.0), now=0.0)
    q.push(Waiter("new-short", 2.0), now=2.0)  # key 4 < 5: goes first
    assert q.peek(2.0).name == "new-short"  # type: ignore[union-attr]
    q.push(Waiter("newer-short", 2.0), now=4.0)  # key 6 > 5: the old one has waited enough
    q.pop(4.0)
    assert q.pop(4.0).name == "old-long"


def test_starved_requests_go_first_in_arrival_order() -> None:
    q = make(aging=0, starvation=10)
    q.push(Waiter(1, 100.0), now=0.0)
    q.push(Waiter(2, 90.0), now=1.0)
    q.push(Waiter(3, 0.0), now=5.0)
    assert q.pop(5.0).name == 3  # nobody starved yet: shortest first
    q.push(Waiter(4, 0.0), now=10.5)
    assert names([q.pop(11.5), q.pop(11.5), q.pop(11.5)]) == [1, 2, 4]


def test_a_long_request_is_not_starved_by_a_stream_of_short_ones() -> None:
    """Overload: a short request every 0.4 s, one served every 0.5 s. Without the guard the long
    request would wait for the stream to end; with it, it waits about starvation_s."""

    def wait_of_long(aging: float, starvation: float) -> float:
        q = make(aging, starvation)
        q.push(Waiter("long", 10.0), now=0.0)
        t, k = 0.0, 0
        while t < 100.0:
            while k * 0.4 <= t:
                q.push(Waiter(f"s{k}", 1.0), now=k * 0.4)
                k += 1
            if q.pop(t).name == "long":
                return t
            t += 0.5
        return 100.0

    assert wait_of_long(aging=0.0, starvation=1e9) == 100.0
    assert wait_of_long(aging=0.0, starvation=5.0) <= 5.5
    assert wait_of_long(aging=1.0, starvation=1e9) < 15.0


def test_remove_and_repush_use_the_new_score() -> None:
    q = make(aging=0, starvation=100)
    a, b = Waiter("a", 1.0), Waiter("b", 2.0)
    q.push(a, now=0)
    q.push(b, now=0)
    q.remove(a)
    q.remove(a)  # absent is fine, like the router's FCFS queue
    a.score = 3.0
    q.push(a, now=0)
    with pytest.raises(KeyError):
        q.push(a, now=0)
    assert a in q
    assert names([q.pop(0), q.pop(0)]) == ["b", "a"]
    for i in range(500):  # lazy deletions are compacted
        w = Waiter(i, float(i))
        q.push(w, now=0)
        q.remove(w)
    assert len(q._by_key) < 200 and len(q._by_due) < 200
    assert len(q) == 0


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(0, 20), min_size=1, max_size=60),
    gaps=st.lists(st.floats(0, 1), min_size=60, max_size=60),
    aging=st.floats(0, 2),
)
def test_every_request_is_served_and_starved_ones_leave_oldest_first(
    scores: list[float], gaps: list[float], aging: float
) -> None:
    q = make(aging, starvation=3.0)
    now, served, waiting = 0.0, [], []
    for i, s in enumerate(scores):
        now += gaps[i]
        w = Waiter(i, s, arrived=now)
        q.push(w, now)
        waiting.append(w)
        if i % 2:  # serve at half the arrival rate: the queue builds up
            oldest = min(waiting, key=lambda x: x.arrived)
            item = q.pop(now)
            if now - oldest.arrived >= 3.0:
                assert item is oldest
            waiting.remove(item)
            served.append(item.name)
    while len(q):
        now += 0.5
        served.append(q.pop(now).name)
    assert sorted(served) == list(range(len(scores)))  # type: ignore[type-var]


def test_rekey_reorders_by_the_new_score_and_keeps_the_arrival() -> None:
    scores = {"a": 50.0, "b": 50.0, "c": 50.0}
    q = OrderedQueue(scores.__getitem__, QueueOrderParams(aging_per_s=0.0, starvation_s=10.0))
    for t, item in enumerate("abc"):
        q.push(item, float(t))
    scores["a"] = 500.0
    q.rekey("a")
    q.rekey("absent")  # gone already (dispatched, cancelled): ignored
    assert q.peek(2.0) == "b" and len(q) == 3
    # "a" arrived first: once starved it still goes first, as its arrival was kept.
    assert q.peek(10.0) == "a"
    assert [q.pop(3.0) for _ in range(3)] == ["b", "c", "a"]


def test_a_higher_tier_goes_first_until_a_lower_one_falls_due() -> None:
    tiers = {"low-short": 0, "high-long": 1, "high-short": 1}
    scores = {"low-short": 1.0, "high-long": 900.0, "high-short": 5.0}
    q = OrderedQueue(
        scores.__getitem__, QueueOrderParams(aging_per_s=0.0, starvation_s=10.0), tier_of=tiers.__getitem__
    )
    for name in tiers:
        q.push(name, 0.0)
    assert [q.pop(1.0), q.pop(1.0)] == ["high-short", "high-long"]  # tier first, score inside it
    q.push("high-short", 2.0)
    assert q.peek(9.9) == "high-short"
    assert q.peek(10.0) == "low-short"  # waited its starvation bound: due, ahead of any tier


def test_due_items_leave_earliest_due_first_and_a_due_time_never_exceeds_the_bound() -> None:
    due = {"slow-ok": None, "tight": 0.5, "loose": 4.0, "absurd": 1e9, "negative": -3.0}
    q = OrderedQueue(
        lambda _: 0.0, QueueOrderParams(aging_per_s=0.0, starvation_s=5.0), due_of=due.__getitem__
    )
    for t, name in enumerate(due):
        q.push(name, float(t))  # arrivals 0..4; due at 5, 1.5, 6, 8 (capped), 4 (now)
    assert q.peek(1.0) == "slow-ok" and q.peek(1.5) == "tight"  # arrival order until one falls due
    order = [q.pop(100.0) for _ in range(len(due))]
    assert order == ["tight", "negative", "slow-ok", "loose", "absurd"]
