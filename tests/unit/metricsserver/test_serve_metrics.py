"""The shared /metrics server: the registry as scraped, and /healthz only where a check is given."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter

from flotilla.metricsserver import serve_metrics


async def test_metrics_without_a_health_check_has_no_healthz() -> None:
    registry = CollectorRegistry()
    Counter("flotilla_test_things", "Things.", registry=registry).inc(2)
    async with (
        serve_metrics(registry, "127.0.0.1", 0) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        resp = await client.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        assert "flotilla_test_things_total 2.0" in resp.text
        assert (await client.get("/healthz")).status_code == 404


async def test_healthz_follows_the_check_and_says_why_it_fails() -> None:
    ok = [True]
    async with (
        serve_metrics(
            CollectorRegistry(), "127.0.0.1", 0, healthy=lambda: ok[0], unhealthy_text="stuck\n"
        ) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        first = await client.get("/healthz")
        assert (first.status_code, first.text) == (200, "ok\n")
        ok[0] = False
        second = await client.get("/healthz")
        assert (second.status_code, second.text) == (503, "stuck\n")
