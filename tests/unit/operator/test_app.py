"""The Kopf wiring: handlers run on the event loop and feed the cache and the queue."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

from flotilla.api import labels
from flotilla.operator.app import Runtime, build_registry
from flotilla.operator.cache import ClusterCache
from flotilla.operator.config import OperatorConfig
from flotilla.operator.workqueue import WorkQueue


def _runtime(**config: Any) -> Runtime:
    cache = ClusterCache()
    return Runtime(
        config=OperatorConfig(**config),
        cache=cache,
        queue=WorkQueue(),
        controller=SimpleNamespace(),  # type: ignore[arg-type]
        writer=SimpleNamespace(),  # type: ignore[arg-type]
    )


def _handlers(rt: Runtime) -> dict[str, Any]:
    registry = build_registry(rt, SimpleNamespace())
    return {h.selector.any_name or h.selector.plural: h.fn for h in registry._watching.get_all_handlers()}


def test_every_handler_is_a_coroutine() -> None:
    # Kopf runs plain functions in threads; the cache and queue are not thread-safe.
    rt = _runtime()
    handlers = _handlers(rt)
    assert set(handlers) == {labels.PLURAL, "pods", "nodes", "priorityclasses"}
    assert all(inspect.iscoroutinefunction(fn) for fn in handlers.values())


async def test_pod_events_are_batched_per_fleet() -> None:
    rt = _runtime(pod_event_delay_s=0.05)
    handlers = _handlers(rt)
    fleet = {"metadata": {"name": "f", "namespace": "ns", "resourceVersion": "1"}}
    await handlers[labels.PLURAL](event={"type": "ADDED", "object": fleet})
    assert await asyncio.wait_for(rt.queue.get(), 1) == ("ns", "f")
    rt.queue.done(("ns", "f"))
    for i in range(5):
        pod = {"metadata": {"name": f"p{i}", "namespace": "ns", "labels": {labels.LABEL_FLEET: "f"}}}
        await handlers["pods"](event={"type": "ADDED", "object": pod})
    assert len(rt.queue) == 0, "not yet: pod events wait for the batch delay"
    assert await asyncio.wait_for(rt.queue.get(), 1) == ("ns", "f")
    assert len(rt.cache.pods_of(("ns", "f"))) == 5
    rt.queue.close()
