"""The simulator's router keeps least_work's pending-prefill accounting as the live router does."""

from __future__ import annotations

import random

from flotilla.api.routing import LeastWorkParams
from flotilla.router.policies import RequestFeatures
from flotilla.router.policies.least_work import LeastWork
from flotilla.router.queue_orders import default_queue_orders
from flotilla.sim.router import SimRouter


def req(prompt: int) -> RequestFeatures:
    return RequestFeatures(model="m", prompt_tokens=prompt, predicted_output_tokens=50.0)


def test_sim_router_keeps_the_same_accounting() -> None:
    router = SimRouter(
        instances=2,
        model="m",
        policy=LeastWork(LeastWorkParams()),
        queue=default_queue_orders().factory("fcfs")(lambda i: req(0)),
        rng=random.Random(0),
        max_inflight=4,
        predicted_remaining=lambda j: 0.0,
    )
    a = router.dispatch(req(9000), 50.0)
    b = router.dispatch(req(100), 50.0)
    assert a is not None and b is not None and a != b  # the second avoids the 9k prefill
    assert router.records[a].pending_prefill == 9000
    router.first_token(a, req(9000))
    assert router.records[a].pending_prefill == 0
    router.release(a, req(9000), 50.0)
    router.release(b, req(100), 50.0, prefilled=False)  # killed before its first token
    assert [r.pending_prefill for r in router.records] == [0, 0]
