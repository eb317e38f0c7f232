"""Requests never wait long for a length prediction: the deadline, the fallback, late landing.

The stand-in predictor blocks its worker thread on an Event, so each test decides when a prediction
lands instead of racing a clock.
"""

import asyncio
import random
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from flotilla.router.admission import Admission, queue_factory
from flotilla.router.instances import InstanceSpec, InstanceTable
from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies import RequestFeatures, default_registry
from flotilla.router.policy_book import PolicyBook
from flotilla.router.prediction import Estimate
from flotilla.router.predictor import Prediction, PredictorInput
from flotilla.router.predictor_service import PredictorService


class Gated:
    """10 output tokens per prompt word, computed only once `gate` is set; counts what it scores."""

    name = "gated-v1"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.scored: list[str] = []

    def embed(self, batch: Sequence[PredictorInput]) -> np.ndarray:
        if not self.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        self.scored += [r.text for r in batch]
        return np.array([[len(r.text.split())] for r in batch], dtype=np.float32)

    def predict_embedded(self, z: np.ndarray, max_tokens: Sequence[int | None]) -> list[Prediction]:
        return [
            Prediction(float(r[0]), min(10.0 * float(r[0]), c or 1e9), 20.0 * float(r[0]))
            for r, c in zip(z, max_tokens, strict=True)
        ]

    def predict(self, batch: Sequence[PredictorInput]) -> list[Prediction]:
        return self.predict_embedded(self.embed(batch), [r.max_tokens for r in batch])


def feats(prompt_tokens: int = 8, max_tokens: int | None = None) -> RequestFeatures:
    return RequestFeatures(model="m", prompt_tokens=prompt_tokens, max_tokens=max_tokens)


async def loaded(pred: Gated, **kw: object) -> tuple[PredictorService, CollectorRegistry]:
    reg = CollectorRegistry()
    svc = PredictorService(RouterMetrics(reg), loader=lambda ref: pred, **kw)  # type: ignore[arg-type]
    svc.want({"m": "gated"})
    for _ in range(500):
        if svc.state("m") == "gated-v1":
            return svc, reg
        await asyncio.sleep(0.01)
    raise AssertionError(svc.state("m"))


async def test_past_the_deadline_the_request_goes_on_with_a_fallback_and_the_prediction_follows() -> None:
    pred = Gated()
    svc, reg = await loaded(pred, deadline_s=0.02)
    est = await svc.estimate(feats(prompt_tokens=7), "one two three")
    assert est.predictor == "fallback" and est.tokens == 7.0  # no learned mean yet: the proxy guess
    assert est.late is not None and not est.late.done()
    assert reg.get_sample_value("flotilla_router_predictor_fallbacks_total", {"model": "m"}) == 1
    pred.gate.set()
    learned = await asyncio.wait_for(est.late, 10)
    assert learned.predictor == "gated-v1" and learned.tokens == 30.0 and learned.features is not None
    # Later fallbacks use the model's recent mean prediction, capped by max_tokens.
    pred.gate.clear()
    nxt = await svc.estimate(feats(max_tokens=20), "a b c d e")
    assert nxt.predictor == "fallback" and nxt.tokens == 20.0
    pred.gate.set()
    assert nxt.late is not None and (await asyncio.wait_for(nxt.late, 10)).tokens == 20.0
    await svc.aclose()


async def test_no_wait_at_all_when_the_prediction_cannot_change_the_dispatch() -> None:
    pred = Gated()
    asked: list[RequestFeatures] = []

    def matters(request: RequestFeatures) -> bool:
        asked.append(request)
        return False

    svc, _ = await loaded(pred, deadline_s=60.0, matters=matters)
    est = await asyncio.wait_for(svc.estimate(feats(), "one two"), 5)  # not the 60 s deadline
    assert est.predictor == "fallback" and asked == [feats()]
    pred.gate.set()
    assert est.late is not None and (await asyncio.wait_for(est.late, 10)).tokens == 20.0
    await svc.aclose()


async def test_in_time_predictions_are_used_directly_and_identical_prompts_are_scored_once() -> None:
    pred = Gated()
    pred.gate.set()
    svc, _ = await loaded(pred, deadline_s=30.0)
    first = await svc.estimate(feats(), "same prompt here")
    again = await svc.estimate(feats(), "same prompt here")
    capped = await svc.estimate(feats(max_tokens=5), "same prompt here")
    assert (first.tokens, again.tokens, capped.tokens) == (30.0, 30.0, 5.0)
    assert first.late is None and first.predictor == "gated-v1"
    assert pred.scored == ["same prompt here", "same prompt here"]  # max_tokens is part of the key
    await svc.aclose()


async def test_observe_judges_the_late_learned_prediction_not_the_fallback() -> None:
    pred = Gated()
    svc, reg = await loaded(pred, deadline_s=0.0)
    est = await svc.estimate(feats(), "one two three four")
    assert est.predictor == "fallback"
    svc.observe(feats(), est, output_tokens=40)  # finished before its prediction landed
    assert svc.feature_log is not None and len(svc.feature_log.snapshot("m")) == 0
    pred.gate.set()
    assert est.late is not None
    await asyncio.wait_for(est.late, 10)
    await asyncio.sleep(0)  # the deferred observation runs as the prediction lands
    snap = svc.feature_log.snapshot("m")
    assert len(snap) == 1 and snap.features[0].tolist() == [4.0] and snap.output_tokens[0] == 40
    # Learned 40 tokens for 40 actual: ratio 1, in the (0.9, 1.1] bucket.
    assert reg.get_sample_value("flotilla_router_predictor_ratio_bucket", {"model": "m", "le": "0.9"}) == 0
    assert reg.get_sample_value("flotilla_router_predictor_ratio_bucket", {"model": "m", "le": "1.1"}) == 1
    await svc.aclose()


async def test_a_failed_late_prediction_is_cancelled_and_the_fallback_stands() -> None:
    class Broken(Gated):
        def embed(self, batch: Sequence[PredictorInput]) -> np.ndarray:
            super().embed(batch)
            raise RuntimeError("boom")

    pred = Broken()
    svc, _ = await loaded(pred, deadline_s=0.0)
    est = await svc.estimate(feats(prompt_tokens=9), "x y")
    pred.gate.set()
    assert est.late is not None
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(est.late, 10)
    # The failure is not cached: the next request for that prompt is scored again.
    again = await svc.estimate(feats(prompt_tokens=9), "x y")
    assert again.late is not None
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(again.late, 10)
    assert pred.scored == ["x y", "x y"]
    await svc.aclose()


# ---- admission: late predictions re-key waiting requests and correct leases ----------------------


def admission(
    order: str = "fcfs", kv_usage_limit: float | None = None, policy: str = "least_request"
) -> Admission:
    table = InstanceTable(default_max_inflight=1)
    table.update([InstanceSpec(id="i0", url="http://x0", model="m")])
    return Admission(
        table,
        PolicyBook(default_registry(), policy, {}),
        RouterMetrics(CollectorRegistry()),
        rng=random.Random(0),
        queue_factory=queue_factory(
            order, {"aging_per_s": 0.0, "starvation_s": 1000.0} if order != "fcfs" else None
        ),
        max_queue=100,
        max_wait_s=60,
        kv_usage_limit=kv_usage_limit,
    )


def req(predicted: float, prompt_tokens: int = 5) -> RequestFeatures:
    return RequestFeatures(model="m", prompt_tokens=prompt_tokens, predicted_output_tokens=predicted)


def landing(tokens: float) -> Estimate:
    return Estimate(tokens, "learned")


async def test_a_prediction_landing_after_dispatch_corrects_the_instance_accounting() -> None:
    adm = admission()
    late: asyncio.Future[Estimate] = asyncio.get_running_loop().create_future()
    lease = await adm.acquire(req(100.0), late=late)
    record = lease.record
    assert (record.predicted_remaining, record.inflight_tokens) == (100.0, 105)
    lease.progress(30)
    assert record.predicted_remaining == 70.0
    late.set_result(landing(400.0))
    await asyncio.sleep(0)  # done-callbacks run on the next loop iteration
    assert lease.predicted == 400.0 and lease.features.predicted_output_tokens == 400.0
    assert (record.predicted_remaining, record.inflight_tokens) == (370.0, 405)
    lease.release()
    assert (record.predicted_remaining, record.inflight_tokens) == (0.0, 0)


async def test_a_prediction_landing_after_release_changes_nothing() -> None:
    adm = admission()
    late: asyncio.Future[Estimate] = asyncio.get_running_loop().create_future()
    lease = await adm.acquire(req(100.0), late=late)
    lease.release()
    late.set_result(landing(400.0))
    await asyncio.sleep(0)
    assert (lease.record.predicted_remaining, lease.record.inflight_tokens) == (0.0, 0)


async def test_an_already_landed_prediction_is_used_at_acquire() -> None:
    adm = admission()
    late: asyncio.Future[Estimate] = asyncio.get_running_loop().create_future()
    late.set_result(landing(250.0))
    lease = await adm.acquire(req(100.0), late=late)
    assert lease.predicted == 250.0 and lease.record.predicted_remaining == 250.0
    lease.release()


async def test_waiting_requests_are_reordered_when_their_predictions_land() -> None:
    adm = admission("shortest_predicted_first")
    holder = await adm.acquire(req(1.0))
    order: list[str] = []
    lates: dict[str, asyncio.Future[Estimate]] = {}

    async def enqueue(name: str) -> None:
        lates[name] = asyncio.get_running_loop().create_future()
        # All queued with the same fallback estimate: arrival order would be a, b, c.
        lease = await adm.acquire(req(50.0), late=lates[name])
        order.append(f"{name}:{lease.predicted:g}")
        await asyncio.sleep(0)
        lease.release()

    tasks = []
    for name in "abc":
        tasks.append(asyncio.create_task(enqueue(name)))
        await asyncio.sleep(0)
    assert adm.depth("m") == 3
    for name, tokens in (("a", 900.0), ("b", 300.0), ("c", 10.0)):
        lates[name].set_result(landing(tokens))
    await asyncio.sleep(0)
    holder.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["c:10", "b:300", "a:900"]
    assert holder.record.predicted_remaining == 0.0


async def test_a_waiter_dispatched_before_its_prediction_lands_has_its_lease_revised() -> None:
    adm = admission("shortest_predicted_first")
    holder = await adm.acquire(req(1.0))
    late: asyncio.Future[Estimate] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(adm.acquire(req(50.0), late=late))
    await asyncio.sleep(0)
    holder.release()  # dispatches the waiter with its fallback
    lease = await asyncio.wait_for(waiting, 5)
    assert lease.predicted == 50.0
    late.set_result(landing(500.0))
    await asyncio.sleep(0)
    assert lease.predicted == 500.0 and lease.record.predicted_remaining == 500.0
    lease.release()
    assert lease.record.predicted_remaining == 0.0


async def test_prediction_matters_only_for_an_immediate_dispatch_that_reads_it() -> None:
    # No KV check and a policy that ranks by the instances' accounting: never worth waiting.
    assert not admission(policy="predicted_load").prediction_matters(req(1.0))
    kv = admission(kv_usage_limit=0.9)
    assert kv.prediction_matters(req(1.0))  # dispatched now, through the KV check
    holder = await kv.acquire(req(1.0))
    assert not kv.prediction_matters(req(1.0))  # no free slot: it will queue and get it meanwhile
    waiting = asyncio.create_task(kv.acquire(req(1.0)))
    await asyncio.sleep(0)
    assert kv.depth("m") == 1 and not kv.prediction_matters(req(1.0))
    holder.release()
    (await asyncio.wait_for(waiting, 5)).release()
    assert kv.prediction_matters(req(1.0))


async def test_no_wait_when_the_backlog_means_the_prediction_cannot_make_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pred = Gated()
    pred.gate.set()
    svc, _ = await loaded(pred, deadline_s=0.5)
    assert (await svc.estimate(feats(), "warm up")).predictor == "gated-v1"
    batcher = svc._slots["m"].batcher
    assert batcher is not None
    monkeypatch.setattr(batcher, "expected_wait_s", lambda: 0.6)  # e.g. a burst queued ahead
    waited: list[object] = []
    real_wait = asyncio.wait

    async def spy(*args: object, **kw: object) -> object:
        waited.append(args)
        return await real_wait(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "wait", spy)
    est = await svc.estimate(feats(), "behind a backlog")
    assert est.predictor == "fallback" and waited == []
    assert est.late is not None and (await asyncio.wait_for(est.late, 10)).tokens == 30.0
    await svc.aclose()
