"""Found by the router-restart fault: a router replica that has just started serves before its
discovery has delivered the instance list, and answered a served model with 404 "does not exist"
(not retryable) for that moment. It must refuse with a retryable 503 + Retry-After instead."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from flotilla.enginesim.process import free_port, start_engine
from flotilla.router.app import Router
from flotilla.router.config import RouterConfig
from flotilla.router.discovery import OnUpdate
from flotilla.router.discovery.static import StaticDiscovery


class GatedDiscovery:
    """Static discovery whose first publish waits for `release` (a slow first list)."""

    def __init__(self, inner: StaticDiscovery) -> None:
        self.inner = inner
        self.release = asyncio.Event()

    async def run(self, on_update: OnUpdate) -> None:
        await self.release.wait()
        await self.inner.run(on_update)


async def test_a_router_without_its_instance_list_refuses_retryably() -> None:
    engine = await start_engine(model="m", args=["--time-scale", "0"])
    config = RouterConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": free_port(),
            "static": {"instances": [{"url": engine.url, "model": "m"}]},
        }
    )
    assert config.static is not None
    discovery = GatedDiscovery(StaticDiscovery(config.static))
    router = Router(config, discovery, registry=CollectorRegistry())
    server = uvicorn.Server(
        uvicorn.Config(router.app(), host=config.host, port=config.port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    url = f"http://{config.host}:{config.port}"
    body = {"model": "m", "prompt": "hi", "max_tokens": 4}
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.ConnectError):
                    if (await client.get(url + "/health")).status_code == 200:
                        break
                await asyncio.sleep(0.02)
            for path in ("/v1/completions", "/v1/chat/completions"):
                early = await client.post(url + path, json=body)
                assert early.status_code == 503, early.text
                assert early.headers["retry-after"] == "1"
                assert "starting" in early.json()["error"]["message"]
            discovery.release.set()
            for _ in range(100):
                if router.discovered:
                    break
                await asyncio.sleep(0.02)
            assert (await client.post(url + "/v1/completions", json=body)).status_code == 200
            unknown = await client.post(url + "/v1/completions", json={**body, "model": "nope"})
            assert unknown.status_code == 404
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await engine.stop()
