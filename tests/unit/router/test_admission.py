import asyncio
import logging
import random
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from flotilla.router.admission import Admission
from flotilla.router.errors import ApiError
from flotilla.router.instances import InstanceSpec, InstanceTable
from flotilla.router.metrics import RouterMetrics
from flotilla.router.model_routing import ModelRouting
from flotilla.router.policies import RequestFeatures, default_registry
from flotilla.router.policy_book import PolicyBook
from flotilla.router.prediction import ProxyPredictor


def make(
    n: int = 2, max_inflight: int = 1, max_queue: int = 3, max_wait_s: float = 5.0
) -> tuple[Admission, InstanceTable]:
    table = InstanceTable(default_max_inflight=max_inflight)
    table.update([InstanceSpec(id=f"i{k}", url=f"http://x{k}", model="m") for k in range(n)])
    book = PolicyBook(default_registry(), "least_request", {})
    adm = Admission(
        table,
        book,
        RouterMetrics(CollectorRegistry()),
        rng=random.Random(0),
        max_queue=max_queue,
        max_wait_s=max_wait_s,
    )
    return adm, table


def req(prompt_tokens: int = 10, max_tokens: int | None = 20) -> RequestFeatures:
    """Features as the request path makes them: with the proxy predictor's guess."""
    f = RequestFeatures(model="m", prompt_tokens=prompt_tokens, max_tokens=max_tokens)
    return replace(f, predicted_output_tokens=ProxyPredictor().guess(f))


async def test_leases_fill_free_instances_then_queue_fcfs() -> None:
    adm, table = make()
    a, b = await adm.acquire(req()), await adm.acquire(req())
    assert {a.record.id, b.record.id} == {"i0", "i1"}
    assert (
        a.record.inflight == 1 and a.record.inflight_tokens == 10 + 10
    )  # predicted = min(max_tokens, prompt)
    order: list[int] = []

    async def waiter(k: int) -> None:
        lease = await adm.acquire(req())
        order.append(k)
        await asyncio.sleep(0)
        lease.release()

    tasks = [asyncio.create_task(waiter(k)) for k in range(3)]
    await asyncio.sleep(0.01)
    assert adm.depth("m") == 3 and order == []
    a.release()
    b.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert all(r.inflight == 0 and r.inflight_tokens == 0 and r.predicted_remaining == 0 for r in table.all())


async def test_full_queue_is_429_with_retry_after() -> None:
    adm, _ = make(n=1, max_queue=1)
    await adm.acquire(req())
    queued = asyncio.create_task(adm.acquire(req()))
    await asyncio.sleep(0)
    with pytest.raises(ApiError) as e:
        await adm.acquire(req())
    assert e.value.status == 429 and e.value.retry_after is not None
    queued.cancel()


async def test_queue_wait_limit_is_429_and_leaves_no_trace() -> None:
    adm, table = make(n=1, max_wait_s=0.05)
    lease = await adm.acquire(req())
    with pytest.raises(ApiError) as e:
        await adm.acquire(req())
    assert e.value.status == 429
    assert adm.depth("m") == 0
    lease.release()
    assert table.all()[0].inflight == 0


async def test_cancelled_waiter_does_not_leak_a_lease() -> None:
    adm, table = make(n=1)
    lease = await adm.acquire(req())
    task = asyncio.create_task(adm.acquire(req()))
    await asyncio.sleep(0)
    lease.release()  # grants the waiter...
    task.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert table.all()[0].inflight == 0 and adm.depth("m") == 0


async def test_unknown_model_404_and_no_ready_instance_503() -> None:
    adm, table = make()
    with pytest.raises(ApiError) as e:
        await adm.acquire(RequestFeatures(model="other", prompt_tokens=1))
    assert e.value.status == 404
    for r in table.all():
        r.eject()
    with pytest.raises(ApiError) as e:
        await adm.acquire(req())
    assert e.value.status == 503


async def test_excluded_instances_are_not_chosen() -> None:
    adm, _ = make(n=2, max_inflight=5)
    for _ in range(10):
        lease = await adm.acquire(req(), exclude=frozenset({"i0"}))
        assert lease.record.id == "i1"
        lease.release()


async def test_streamed_progress_reduces_predicted_remaining() -> None:
    adm, table = make(n=1)
    lease = await adm.acquire(req(prompt_tokens=100, max_tokens=30))
    rec = table.all()[0]
    assert rec.predicted_remaining == 30
    lease.progress(10)
    assert rec.predicted_remaining == 20
    lease.progress(50)
    assert rec.predicted_remaining == 0
    lease.release()
    assert rec.predicted_remaining == 0 and rec.inflight_tokens == 0


async def test_fleet_policy_is_used_and_a_bad_one_falls_back() -> None:
    book = PolicyBook(default_registry(), "least_request", {})
    assert book.policy_for("m", ModelRouting(policy="round_robin")).name == "round_robin"
    assert book.policy_for("m", ModelRouting(policy="bogus")).name == "least_request"
    assert "bogus" in book.rejected["m"].message


def test_a_rejected_fleet_policy_is_logged_and_exported(caplog: pytest.LogCaptureFixture) -> None:
    """A misspelt name or bad params are never silent: one warning naming the fleet's field, and
    `flotilla_router_policy_rejected` is 1 until the fleet is fixed."""
    metrics = RouterMetrics(CollectorRegistry())
    book = PolicyBook(default_registry(), "least_request", {}, metrics=metrics)

    def rejected(policy: str, field: str) -> float | None:
        return metrics.registry.get_sample_value(
            "flotilla_router_policy_rejected", {"model": "m", "policy": policy, "field": field}
        )

    with caplog.at_level(logging.WARNING, logger="flotilla.router.policy_book"):
        assert book.policy_for("m", ModelRouting(policy="lest_request")).name == "least_request"
        book.policy_for("m", ModelRouting(policy="lest_request"))  # the same configuration: no second warning
    assert [r.__dict__["field"] for r in caplog.records] == ["spec.router.policy"]
    assert rejected("lest_request", "spec.router.policy") == 1

    bad_params = ModelRouting(policy="prefix_affinity", params={"no_such_param": 1})
    assert book.policy_for("m", bad_params).name == "least_request"
    assert rejected("lest_request", "spec.router.policy") is None
    assert rejected("prefix_affinity", "spec.router.params") == 1
    assert "spec.router.params" in book.rejected["m"].message

    assert book.policy_for("m", ModelRouting(policy="round_robin")).name == "round_robin"
    assert rejected("prefix_affinity", "spec.router.params") is None
    assert "m" not in book.rejected
