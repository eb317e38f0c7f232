"""The request body is bounded in size and in time (a stalled client cannot hold a request)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from flotilla.openaihttp import ApiError, read_body


def _request(messages: list[dict[str, Any]], *, stall: bool) -> Request:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if stall:
            await asyncio.Event().wait()  # the client keeps the connection open and sends nothing
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}
    return Request(scope, receive)


async def test_a_body_in_parts_is_joined() -> None:
    parts = [
        {"type": "http.request", "body": b'{"model":', "more_body": True},
        {"type": "http.request", "body": b' "m"}', "more_body": False},
    ]
    assert await read_body(_request(parts, stall=False), limit=1024) == b'{"model": "m"}'


async def test_a_stalled_body_is_answered_with_408() -> None:
    part = [{"type": "http.request", "body": b'{"model":', "more_body": True}]
    with pytest.raises(ApiError) as caught:
        await read_body(_request(part, stall=True), limit=1024, timeout_s=0.05)
    assert caught.value.status == 408
    assert "not received within" in caught.value.message


async def test_an_oversized_body_is_answered_with_413() -> None:
    part = [{"type": "http.request", "body": b"x" * 100, "more_body": False}]
    with pytest.raises(ApiError) as caught:
        await read_body(_request(part, stall=False), limit=10)
    assert caught.value.status == 413
