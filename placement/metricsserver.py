"""/metrics and /healthz for the placement loop, served by aiohttp in the loop's own event loop.

aiohttp rather than a second framework: kubernetes_asyncio already depends on it, and one event loop
for the scheduler and its server means no thread and no lock between the loop's bookkeeping and the
scrape (every metric update and every scrape runs on the same thread, whole). The solve itself runs
in a worker thread (`asyncio.to_thread`), so a 1 s solve never delays a scrape or a probe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def metrics_app(registry: CollectorRegistry, healthy: Callable[[], bool]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "no cycle ended recently\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


@asynccontextmanager
async def serve_metrics(
    registry: CollectorRegistry, healthy: Callable[[], bool], host: str, port: int
) -> AsyncIterator[int]:
    """Serve until the block exits; yields the bound port (pass port 0 to pick a free one)."""
    runner = web.AppRunner(metrics_app(registry, healthy), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        yield int(bound)
    finally:
        await runner.cleanup()
