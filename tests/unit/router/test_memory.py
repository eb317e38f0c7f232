"""Memory-aware admission: an instance takes a request only while its KV estimate stays under the limit."""

import asyncio
import random

from prometheus_client import CollectorRegistry

from flotilla.router.admission import Admission
from flotilla.router.instances import EngineSample, InstanceSpec, InstanceTable
from flotilla.router.memory import fitting, kv_after
from flotilla.router.metrics import RouterMetrics
from flotilla.router.model_routing import ModelRouting
from flotilla.router.policies import InstanceView, RequestFeatures, default_registry
from flotilla.router.policy_book import PolicyBook


def test_fitting_filters_waits_or_gives_up() -> None:
    a = InstanceView(id="a", est_kv_usage=0.85, kv_capacity_tokens=1000)
    b = InstanceView(id="b", est_kv_usage=0.5, kv_capacity_tokens=1000, inflight=1)
    unknown = InstanceView(id="u")
    assert kv_after(a, 100) == 0.95 and kv_after(unknown, 100) is None
    assert [v.id for v in fitting([a, b], 100, 0.9) or []] == ["b"]
    assert fitting([a, b], 450, 0.9) is None  # none fits; b has our request in flight: wait
    idle = InstanceView(id="c", est_kv_usage=0.95, kv_capacity_tokens=1000)
    assert [v.id for v in fitting([idle], 100, 0.9) or []] == ["c"]  # nothing of ours to wait for
    assert [v.id for v in fitting([a, unknown], 100, 0.9) or []] == ["u"]


async def test_admission_keeps_instances_under_the_limit() -> None:
    table = InstanceTable(default_max_inflight=8)
    table.update(
        [InstanceSpec(id=i, url=f"http://{i}", model="m") for i in ("a", "b")],
        {"m": ModelRouting(policy="round_robin")},
    )
    for rec, usage in zip(table.all(), (0.85, 0.5), strict=True):
        rec.record_sample(EngineSample(running=1, waiting=0, kv_usage=usage, kv_capacity_tokens=1000))
    adm = Admission(
        table,
        PolicyBook(default_registry(), "least_request", {}),
        RouterMetrics(CollectorRegistry()),
        rng=random.Random(0),
        kv_usage_limit=0.9,
    )

    def req(prompt: int, out: float) -> RequestFeatures:
        return RequestFeatures(model="m", prompt_tokens=prompt, predicted_output_tokens=out)

    first = await adm.acquire(req(60, 40))  # 100 tokens: only b stays under 90%
    assert first.record.id == "b"
    second = asyncio.create_task(adm.acquire(req(300, 100)))  # 400: fits nowhere now
    await asyncio.sleep(0.01)
    assert not second.done() and adm.depth("m") == 1
    first.release()  # b back to 50%: 0.5 + 0.4 = 0.9 fits
    lease = await asyncio.wait_for(second, 1)
    assert lease.record.id == "b"
    lease.release()
