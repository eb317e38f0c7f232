"""The operator's /metrics: served by a real aiohttp server on loopback, API requests by verb and
resource, and every family exported even before the operator has state to report."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from flotilla.metricsserver import serve_metrics
from flotilla.operator.app import Runtime, request_counts
from flotilla.operator.cache import ClusterCache
from flotilla.operator.config import OperatorConfig
from flotilla.operator.metrics import SUCCESS, OperatorMetrics
from flotilla.operator.workqueue import WorkQueue

FLEET = {
    "metadata": {"name": "chat", "namespace": "team", "resourceVersion": "3"},
    "spec": {"replicas": 3},
    "status": {"readyReplicas": 1},
}


def _runtime(requests: Counter[str], lease_requests: int | None) -> Runtime:
    cache = ClusterCache()
    cache.apply_fleet("ADDED", FLEET)
    rt = Runtime(
        config=OperatorConfig(),
        cache=cache,
        queue=WorkQueue(),
        controller=SimpleNamespace(),  # type: ignore[arg-type]
        writer=SimpleNamespace(requests=requests),  # type: ignore[arg-type]
        elector=None if lease_requests is None else SimpleNamespace(requests=lease_requests),
        metrics=OperatorMetrics(CollectorRegistry()),
    )
    rt.metrics.bind(cache, lambda: len(rt.queue), lambda: request_counts(rt))
    return rt


def test_every_family_is_exported_before_bind() -> None:
    names = {f.name for f in OperatorMetrics(CollectorRegistry()).registry.collect()}
    assert names == {
        "flotilla_operator_reconciles",
        "flotilla_operator_reconcile_duration_seconds",
        "flotilla_operator_leader",
        "flotilla_operator_fleets",
        "flotilla_operator_fleet_desired_replicas",
        "flotilla_operator_fleet_ready_replicas",
        "flotilla_operator_queue_depth",
        "flotilla_operator_api_requests",
        "flotilla_operator_api_errors",
    }


def test_api_requests_by_verb_and_resource() -> None:
    requests = Counter({"create_pod": 4, "create_pod_failed": 1, "patch_status": 2, "get_node": 1})
    rt = _runtime(requests, lease_requests=7)
    reg = rt.metrics.registry

    def req(verb: str, resource: str) -> float | None:
        return reg.get_sample_value(
            "flotilla_operator_api_requests_total", {"verb": verb, "resource": resource}
        )

    assert req("create", "pods") == 4
    assert req("patch", "inferencefleets/status") == 2
    assert req("get", "nodes") == 1
    assert req("get_or_update", "leases") == 7
    errors = {"verb": "create", "resource": "pods"}
    assert reg.get_sample_value("flotilla_operator_api_errors_total", errors) == 1
    requests["patch_pod"] += 3  # read at scrape time: no copy to keep in sync
    assert req("patch", "pods") == 3
    rt.queue.add(("team", "chat"))
    assert reg.get_sample_value("flotilla_operator_queue_depth") == 1
    rt.queue.close()


async def test_server_on_loopback_serves_the_metrics() -> None:
    rt = _runtime(Counter({"create_pod": 2}), lease_requests=None)
    rt.metrics.leader.set(1)
    rt.metrics.observe_reconcile(SUCCESS, 0.02)
    async with (
        serve_metrics(rt.metrics.registry, "127.0.0.1", 0) as port,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("flotilla_operator_leader", ())] == 1
    assert samples[("flotilla_operator_reconciles_total", (("result", "success"),))] == 1
    assert samples[("flotilla_operator_reconcile_duration_seconds_count", ())] == 1
    assert (
        samples[("flotilla_operator_fleet_desired_replicas", (("fleet", "chat"), ("namespace", "team")))] == 3
    )
    assert (
        samples[("flotilla_operator_fleet_ready_replicas", (("fleet", "chat"), ("namespace", "team")))] == 1
    )
    assert samples[("flotilla_operator_api_requests_total", (("resource", "pods"), ("verb", "create")))] == 2
    rt.queue.close()
