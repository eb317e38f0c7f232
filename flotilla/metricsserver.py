"""/metrics (and optionally /healthz) served by aiohttp on the caller's own event loop.

The operator and the placement loop both expose Prometheus metrics this way. aiohttp rather than a
second framework: Kopf and kubernetes_asyncio already depend on it. Serving on the loop that updates
the metrics means a scrape reads them whole, with no thread and no lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def metrics_app(
    registry: CollectorRegistry,
    healthy: Callable[[], bool] | None = None,
    unhealthy_text: str = "unhealthy\n",
) -> web.Application:
    """GET /metrics, plus GET /healthz (200, or 503 with `unhealthy_text`) when `healthy` is given."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    if healthy is not None:
        check = healthy

        async def healthz(_: web.Request) -> web.Response:
            ok = check()
            return web.Response(status=200 if ok else 503, text="ok\n" if ok else unhealthy_text)

        app.router.add_get("/healthz", healthz)
    return app


@asynccontextmanager
async def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    healthy: Callable[[], bool] | None = None,
    unhealthy_text: str = "unhealthy\n",
) -> AsyncIterator[int]:
    """Serve until the block exits; yields the bound port (pass port 0 to pick a free one)."""
    runner = web.AppRunner(metrics_app(registry, healthy, unhealthy_text), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        yield int(bound)
    finally:
        await runner.cleanup()
