"""Predicted-shortest-first admission order, through `Admission` with a controlled clock."""

import asyncio

import pytest

from flotilla.router.admission import Admission, Lease, queue_factory
from flotilla.router.policies import RequestFeatures
from flotilla.testing.admission import ManualClock, one_slot_admission


def make(clock: ManualClock, **params: float) -> Admission:
    return one_slot_admission(clock, "shortest_predicted_first", params)


def req(predicted: float) -> RequestFeatures:
    return RequestFeatures(model="m", prompt_tokens=5, predicted_output_tokens=predicted)


async def _enqueue(adm: Admission, predicted: float, order: list[float]) -> Lease:
    lease = await adm.acquire(req(predicted))
    order.append(predicted)
    return lease


async def test_shortest_predicted_first() -> None:
    clock = ManualClock()
    adm = make(clock, aging_per_s=0.0, starvation_s=100.0)
    holder = await adm.acquire(req(1))
    order: list[float] = []
    tasks = [asyncio.create_task(_enqueue(adm, p, order)) for p in (300, 10, 120, 40)]
    await asyncio.sleep(0.01)
    assert adm.depth("m") == 4
    holder.release()
    for _ in range(4):
        await asyncio.sleep(0.01)
        done = [t for t in tasks if t.done() and not t.result().released]
        assert len(done) == 1  # one slot: exactly one waiter holds it
        done[0].result().release()
    assert order == [10, 40, 120, 300]


async def test_aging_promotes_a_long_waiter_over_newer_short_ones() -> None:
    clock = ManualClock()
    adm = make(clock, aging_per_s=100.0, starvation_s=1000.0)
    holder = await adm.acquire(req(1))
    order: list[float] = []
    long_task = asyncio.create_task(_enqueue(adm, 500, order))
    await asyncio.sleep(0.01)
    clock.t = 10.0  # the long request waited 10 s: 1000 tokens forgiven
    short = [asyncio.create_task(_enqueue(adm, 50, order)) for _ in range(3)]
    await asyncio.sleep(0.01)
    holder.release()
    await asyncio.sleep(0.01)
    assert order == [500]
    (await long_task).release()
    for _ in short:
        await asyncio.sleep(0.01)
        for t in short:
            if t.done() and not t.result().released:
                t.result().release()
    assert order == [500, 50, 50, 50]


async def test_starvation_bound_serves_the_oldest_whatever_the_scores() -> None:
    """Without aging, a steady stream of short requests would starve a long one forever; the hard
    bound serves it once it waited `starvation_s`."""
    clock = ManualClock()
    adm = make(clock, aging_per_s=0.0, starvation_s=5.0)
    lease = await adm.acquire(req(1))
    order: list[float] = []
    long_task = asyncio.create_task(_enqueue(adm, 10_000, order))
    await asyncio.sleep(0)
    for step in range(12):
        clock.t = float(step)
        short = asyncio.create_task(_enqueue(adm, 5, order))
        await asyncio.sleep(0.001)
        lease.release()
        await asyncio.sleep(0.005)
        lease = short.result() if short.done() else (await long_task)
        if 10_000 in order:
            break
    # Served once its wait reached 5 s, while short ones kept arriving and being preferred before.
    assert 10_000 in order
    assert order.index(10_000) >= 5
    assert all(p == 5 for p in order[: order.index(10_000)])
    lease.release()
    for t in asyncio.all_tasks():
        if t is not asyncio.current_task() and not t.done():
            t.cancel()


def test_unknown_order_or_params_rejected() -> None:
    with pytest.raises(ValueError):
        queue_factory("lifo")
    with pytest.raises(ValueError):
        queue_factory("shortest_predicted_first", {"bogus": 1})
    with pytest.raises(ValueError):
        queue_factory("fcfs", {"aging_per_s": 1})


def test_the_simulator_takes_its_queue_order_from_the_same_registry() -> None:
    """One queue family: a scenario names an order of the router's registry, with strict params."""
    from pydantic import ValidationError

    from flotilla.router.queue_orders import default_queue_orders
    from flotilla.sim.scenario import Scenario

    assert default_queue_orders().names() == [
        "fcfs",
        "least_attained_service",
        "shortest_predicted_first",
        "shortest_work_first",
    ]
    Scenario(
        name="s", policy="least_request", queue="shortest_predicted_first", queue_params={"starvation_s": 5}
    )
    with pytest.raises(ValidationError, match="unknown queue order 'spf'"):
        Scenario(name="s", policy="least_request", queue="spf")
    with pytest.raises(ValidationError, match="bogus"):
        Scenario(name="s", policy="least_request", queue="fcfs", queue_params={"bogus": 1})
    scores = {
        i: RequestFeatures(model="m", prompt_tokens=1, predicted_output_tokens=p)
        for i, p in ((1, 30.0), (2, 10.0), (3, 20.0))
    }
    queue = default_queue_orders().factory("shortest_predicted_first")(scores.__getitem__)
    for i in (1, 2, 3):
        queue.push(i, 0.0)
    assert [queue.pop(0.0) for _ in range(3)] == [2, 3, 1]


def test_shortest_work_first_counts_the_prompt_at_its_prefill_weight() -> None:
    """A long prompt with a short answer is more work than a short prompt with a longer answer."""
    from flotilla.router.queue_orders import default_queue_orders

    features = {
        "long-prompt": RequestFeatures(model="m", prompt_tokens=9000, predicted_output_tokens=100),
        "long-answer": RequestFeatures(model="m", prompt_tokens=200, predicted_output_tokens=800),
        "unknown": RequestFeatures(model="m", prompt_tokens=100),
    }
    orders = default_queue_orders()
    work = orders.factory("shortest_work_first", {"aging_per_s": 0})(features.__getitem__)
    by_output = orders.factory("shortest_predicted_first", {"aging_per_s": 0})(features.__getitem__)
    for queue in (work, by_output):
        for name in features:
            queue.push(name, 0.0)
    # 9000 x 0.176 + 100 = 1684 > 200 x 0.176 + 800 = 835 > 100 x 0.176 = 17.6
    assert [work.pop(1.0) for _ in range(3)] == ["unknown", "long-answer", "long-prompt"]
    assert [by_output.pop(1.0) for _ in range(3)] == ["unknown", "long-prompt", "long-answer"]
    with pytest.raises(ValueError):
        orders.factory("shortest_work_first", {"prompt_token_weight": -1})


async def test_work_first_through_admission_bounds_the_wait_of_a_long_prompt() -> None:
    """Through the router's admission with a controlled clock: `shortest_work_first` serves short
    work first, yet a request waiting longer than `starvation_s` goes before newer short ones."""
    clock = ManualClock()
    adm = one_slot_admission(
        clock, "shortest_work_first", {"aging_per_s": 0.0, "starvation_s": 30.0}, max_wait_s=120
    )
    holder = await adm.acquire(req(1))
    order: list[str] = []

    async def enqueue(name: str, prompt: int) -> Lease:
        lease = await adm.acquire(
            RequestFeatures(model="m", prompt_tokens=prompt, predicted_output_tokens=10)
        )
        order.append(name)
        return lease

    long_prompt = asyncio.create_task(enqueue("long", 9000))
    await asyncio.sleep(0.01)
    short = [asyncio.create_task(enqueue(f"short{k}", 100)) for k in range(2)]
    await asyncio.sleep(0.01)
    holder.release()
    await asyncio.sleep(0.01)
    assert order == ["short0"], "less work first"
    clock.t = 31.0  # the long prompt has now waited past the bound
    later = asyncio.create_task(enqueue("short-later", 100))
    await asyncio.sleep(0.01)
    (await short[0]).release()
    await asyncio.sleep(0.01)
    assert order == ["short0", "long"], "a starved request goes before newer, shorter work"
    (await long_prompt).release()
    await asyncio.sleep(0.01)
    (await short[1]).release()
    await asyncio.sleep(0.01)
    (await later).release()
    assert order == ["short0", "long", "short1", "short-later"]
