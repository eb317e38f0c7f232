"""Fairness: no waiting request is passed over once it falls due, in any queue order, whatever the
clients' priorities, targets and lengths; and through the router's admission, with a controlled
clock, a low-priority request under a flood of urgent short work leaves at its bound."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.api.routing import DEFAULT_PREFILL_TOKEN_S
from flotilla.router.admission import Lease
from flotilla.router.policies import RequestFeatures
from flotilla.router.queue_orders import default_queue_orders
from flotilla.testing.admission import ManualClock, one_slot_admission

STARVATION_S = 4.0
SERVICE_S = 1.0

request = st.builds(
    lambda prompt, out, attained, priority, ttft: RequestFeatures(
        model="m",
        prompt_tokens=prompt,
        predicted_output_tokens=out,
        attained_tokens=attained,
        priority=priority,
        ttft_slo_s=ttft,
    ),
    st.integers(1, 20_000),
    st.floats(1, 2000),
    st.integers(0, 500),
    st.integers(-2, 2),
    st.none() | st.floats(0, 8),
)


def due_in(f: RequestFeatures) -> float:
    wanted = (
        STARVATION_S if f.ttft_slo_s is None else f.ttft_slo_s - f.prompt_tokens * DEFAULT_PREFILL_TOKEN_S
    )
    return min(STARVATION_S, max(0.0, wanted))


@settings(max_examples=40, deadline=None)
@given(
    order=st.sampled_from(default_queue_orders().names()),
    requests=st.lists(request, min_size=1, max_size=50),
    gaps=st.lists(st.floats(0, 1.5), min_size=50, max_size=50),
)
def test_once_due_a_request_is_passed_only_by_requests_due_no_later(
    order: str, requests: list[RequestFeatures], gaps: list[float]
) -> None:
    """One server, each request served in SERVICE_S. After a request falls due, everything that
    leaves the queue before it was due no later (EDF); so its wait past its due time is at most
    one service in progress plus one service per request due before it."""
    params = (
        {"starvation_s": STARVATION_S}
        if order == "fcfs"
        else {"starvation_s": STARVATION_S, "aging_per_s": 1.0}
    )
    queue = default_queue_orders().factory(order, params)(requests.__getitem__)
    arrivals, now = [], 0.0
    for gap in gaps[: len(requests)]:
        now += gap
        arrivals.append(now)
    wait = [due_in(f) for f in requests]
    due = [a + w for a, w in zip(arrivals, wait, strict=True)]
    served: dict[int, float] = {}
    t, nxt = 0.0, 0
    while len(served) < len(requests):
        while nxt < len(requests) and arrivals[nxt] <= t:
            queue.push(nxt, arrivals[nxt])
            nxt += 1
        if not len(queue):
            t = arrivals[nxt]
            continue
        i = queue.pop(t)
        served[i] = t
        t += SERVICE_S
    for i, left in served.items():
        # Due once it has waited its due time (compared as a wait, as the queue does).
        passed_it = [j for j, tj in served.items() if tj - arrivals[i] >= wait[i] and tj < left]
        assert all(due[j] <= due[i] + 1e-9 for j in passed_it), (order, i)
        assert left - due[i] <= SERVICE_S * (1 + len(passed_it)) + 1e-9


async def test_a_low_priority_request_under_a_flood_of_urgent_work_leaves_at_its_bound() -> None:
    clock = ManualClock()
    adm = one_slot_admission(
        clock, "shortest_predicted_first", {"starvation_s": 10.0}, max_queue=1000, max_wait_s=600
    )
    served: list[tuple[str, float]] = []
    granted: list[Lease] = []

    async def enqueue(name: str, priority: int, predicted: float) -> None:
        f = RequestFeatures(model="m", prompt_tokens=5, predicted_output_tokens=predicted, priority=priority)
        granted.append(await adm.acquire(f))
        served.append((name, clock.t))

    await enqueue("holder", 0, 1)
    tasks = [asyncio.create_task(enqueue("low", 0, 1))]
    for step in range(20):  # every second: two urgent short requests arrive, one request leaves
        tasks += [asyncio.create_task(enqueue(f"urgent{step}.{k}", 3, 1)) for k in range(2)]
        await asyncio.sleep(0.001)
        clock.t += 1.0
        granted[-1].release()
        await asyncio.sleep(0.001)
    names = [n for n, _ in served]
    left_at = dict(served)["low"]
    assert 10.0 <= left_at <= 11.0, served  # not before its bound (urgent work first), nor later
    assert all(n.startswith("urgent") for n in names[1 : names.index("low")])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
