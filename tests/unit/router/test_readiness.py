"""/ready tells a Service whether to send this replica traffic; /health only says the process lives.

A replica refuses completions (503) until discovery has delivered its first instance set, and stops
taking new work when SIGTERM starts its drain: /ready must fail in both cases while /health passes,
or the chart's readinessProbe would route clients to a replica that can only refuse them.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from flotilla.router.app import Router, draining_server
from flotilla.router.config import RouterConfig
from flotilla.router.discovery import Discovered, OnUpdate


class HeldDiscovery:
    """Publishes an empty instance set once `release` is set, then stays quiet."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def run(self, on_update: OnUpdate) -> None:
        await self.release.wait()
        on_update(Discovered())
        await asyncio.Event().wait()


def _router(discovery: HeldDiscovery) -> Router:
    # The config names an instance; the held discovery stands in for the one it would build.
    config = RouterConfig.model_validate(
        {"static": {"instances": [{"url": "http://127.0.0.1:9", "model": "m"}]}}
    )
    return Router(config, discovery, registry=CollectorRegistry())


async def _get(client: httpx.AsyncClient, path: str) -> tuple[int, object]:
    resp = await client.get(path)
    return resp.status_code, resp.json()


async def test_ready_only_once_discovered_and_not_while_draining() -> None:
    discovery = HeldDiscovery()
    router = _router(discovery)
    transport = httpx.ASGITransport(app=router.app())
    await router.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            assert await _get(client, "/ready") == (503, {"status": "starting"})
            assert await _get(client, "/health") == (200, {"status": "ok"})

            discovery.release.set()
            for _ in range(100):
                if router.discovered:
                    break
                await asyncio.sleep(0.01)
            assert await _get(client, "/ready") == (200, {"status": "ready"})

            router.begin_drain()
            assert await _get(client, "/ready") == (503, {"status": "draining"})
            assert await _get(client, "/health") == (200, {"status": "ok"})
    finally:
        await router.stop()


async def test_draining_before_discovery_reports_draining() -> None:
    router = _router(HeldDiscovery())
    router.begin_drain()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router.app()), base_url="http://r") as c:
        assert await _get(c, "/ready") == (503, {"status": "draining"})


def test_sigterm_to_the_server_starts_the_drain() -> None:
    router = _router(HeldDiscovery())
    server = draining_server(uvicorn.Config(router.app()), router)
    assert not router.draining
    server.handle_exit(signal.SIGTERM, None)
    assert router.draining
    assert server.should_exit
