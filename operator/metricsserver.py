"""/metrics for the operator, served by aiohttp in the operator's own event loop.

aiohttp rather than a second framework: Kopf and kubernetes_asyncio already depend on it. Serving on
the loop that mutates the cache means a scrape reads it whole, with no thread and no lock. Kopf's
liveness endpoint (/healthz) stays Kopf's own, on its own port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def metrics_app(registry: CollectorRegistry) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@asynccontextmanager
async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> AsyncIterator[int]:
    """Serve until the block exits; yields the bound port (pass port 0 to pick a free one)."""
    runner = web.AppRunner(metrics_app(registry), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        yield int(bound)
    finally:
        await runner.cleanup()
