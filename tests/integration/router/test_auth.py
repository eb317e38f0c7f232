"""API keys through the real router and real engines, called with the official openai client."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

MODEL, OTHER = "sim", "other"
FULL, NARROW, METERED = "sk-full-4f1e2d", "sk-narrow-9a8b7c", "sk-metered-55aa11"


def _auth(tmp_path: Path) -> dict[str, Any]:
    """Keys as a Secret mounted as files gives them (one file per key), plus limited inline keys."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "full").write_text(FULL)
    return {
        "mode": "api_keys",
        "keys_dir": str(secret),
        "keys": [
            {"name": "narrow", "key": NARROW, "models": [OTHER]},
            {"name": "metered", "key": METERED, "tokens_per_minute": 120},
        ],
    }


def _client(url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


async def test_api_keys_through_the_router(
    engines: Any, router_config: Any, serve_router: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    procs = await engines(1, "--time-scale", "0")
    procs += await engines(1, "--time-scale", "0", model=OTHER)
    config = router_config(procs, auth=_auth(tmp_path))
    async with serve_router(config) as (_, url):
        full = _client(url, FULL)
        done = await full.completions.create(model=MODEL, prompt="hello", max_tokens=8)
        assert done.usage is not None and done.usage.completion_tokens > 0
        chunks = [
            c
            async for c in await full.chat.completions.create(
                model=OTHER, messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True
            )
        ]
        assert chunks and chunks[0].model == OTHER

        with pytest.raises(openai.AuthenticationError) as bad:
            await _client(url, "sk-not-a-key").completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert bad.value.status_code == 401 and bad.value.code == "invalid_api_key"

        narrow = _client(url, NARROW)
        with pytest.raises(openai.NotFoundError) as refused:
            await narrow.completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert refused.value.code == "model_not_found"
        assert (await narrow.completions.create(model=OTHER, prompt="x", max_tokens=1)).choices
        assert [m.id async for m in narrow.models.list()] == [OTHER]
        assert sorted([m.id async for m in full.models.list()]) == [OTHER, MODEL]

        metered = _client(url, METERED)
        await metered.completions.create(model=MODEL, prompt="x", max_tokens=100)
        with pytest.raises(openai.RateLimitError) as limited:  # 120 needed, 120 - usage left
            await metered.completions.create(model=MODEL, prompt="x", max_tokens=119)
        assert limited.value.code == "rate_limit_exceeded"
        assert int(limited.value.response.headers["Retry-After"]) >= 1

        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.get("/health")).status_code == 200  # probes and Prometheus stay open
            assert (await c.get("/metrics")).status_code == 200
            assert (await c.get("/v1/models")).status_code == 401
            r = await c.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    logged = "\n".join(repr(r.__dict__) for r in caplog.records)
    assert "narrow" in logged
    for secret in (FULL, NARROW, METERED, "sk-not-a-key"):
        assert secret not in logged
