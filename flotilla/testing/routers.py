"""A router served in-process by uvicorn on a free loopback port, for tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from flotilla.router.app import Router, build_discovery
from flotilla.router.config import RouterConfig
from flotilla.router.policies import PolicyRegistry


@contextlib.asynccontextmanager
async def serve_router(
    config: RouterConfig, policies: PolicyRegistry | None = None, **router_kwargs: Any
) -> AsyncIterator[tuple[Router, str]]:
    """`async with serve_router(config) as (router, url)`: the router object and its base URL."""
    router = Router(
        config, build_discovery(config), registry=CollectorRegistry(), policies=policies, **router_kwargs
    )
    server = uvicorn.Server(
        uvicorn.Config(
            router.app(), host=config.host, port=config.port, log_level="warning", access_log=False
        )
    )
    task = asyncio.create_task(server.serve())
    url = f"http://{config.host}:{config.port}"
    async with httpx.AsyncClient(trust_env=False) as c:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(f"{url}/health")).status_code == 200:
                    break
            await asyncio.sleep(0.02)
    try:
        yield router, url
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
