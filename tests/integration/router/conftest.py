"""Real enginesim processes on loopback ports, and routers served in-process by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from flotilla.enginesim.process import EngineProcess, free_port, start_engine
from flotilla.router.app import Router
from flotilla.router.config import RouterConfig
from flotilla.testing import routers

MODEL = "sim"
StartEngines = Callable[..., Awaitable[list[EngineProcess]]]


@pytest.fixture
async def engines() -> AsyncIterator[StartEngines]:
    started: list[EngineProcess] = []

    async def start(n: int, *args: str, model: str = MODEL) -> list[EngineProcess]:
        procs = await asyncio.gather(*(start_engine(model=model, args=list(args)) for _ in range(n)))
        started.extend(procs)
        return list(procs)

    yield start
    await asyncio.gather(*(p.stop() for p in started))


def _router_config(engines: Sequence[EngineProcess], **overrides: Any) -> RouterConfig:
    instances = [{"url": e.url, "model": e.model, "name": f"e{i}"} for i, e in enumerate(engines)]
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "scrape_interval_s": 0.1,
        "static": {"instances": instances},
        "seed": 0,
    }
    data.update(overrides)
    return RouterConfig.model_validate(data)


@pytest.fixture
def router_config() -> Callable[..., RouterConfig]:
    """`router_config(engines, **overrides)`: a static config for these engines on a free port."""
    return _router_config


@pytest.fixture
def serve_router() -> Callable[..., contextlib.AbstractAsyncContextManager[tuple[Router, str]]]:
    """`async with serve_router(config[, policies]) as (router, url)`: an in-process router on uvicorn."""
    return routers.serve_router
