"""The demo's client against a fake router (httpx MockTransport): what each kind of answer
becomes in the demo's per-request result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import orjson

from flotilla.localcluster.demo_trace import TraceRequest
from flotilla.localcluster.demo_traffic import _one

REQUEST = TraceRequest(at_s=0.0, model="m", input_tokens=4, output_tokens=2, hash_ids=(1,))


def text_event(text: str) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "text": text}]}) + b"\n\n"


def router(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_a_complete_stream_is_ok_with_its_chunks_counted() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(orjson.loads(request.content))
        return httpx.Response(200, content=text_event(" ba") + text_event(" be") + b"data: [DONE]\n\n")

    async with router(handler) as client:
        result = await _one(client, "http://r", REQUEST, "ba be bi", started=0.0)
    assert seen == [{"model": "m", "prompt": "ba be bi", "max_tokens": 2, "ignore_eos": True, "stream": True}]
    assert result.ok and result.status == 200 and result.output_tokens == 2 and result.error == ""
    assert result.ttft_s is not None and result.e2e_s is not None and result.e2e_s >= result.ttft_s


async def test_failures_keep_their_status_and_reason() -> None:
    async with router(lambda r: httpx.Response(429, content=b"busy")) as client:
        result = await _one(client, "http://r", REQUEST, "ba", started=0.0)
    assert (result.ok, result.status, result.ttft_s, result.e2e_s, result.error) == (
        False,
        429,
        None,
        None,
        "busy",
    )

    async with router(lambda r: httpx.Response(200, content=text_event(" ba"))) as client:
        result = await _one(client, "http://r", REQUEST, "ba", started=0.0)
    assert not result.ok and result.error == "stream ended without [DONE]" and result.output_tokens == 1

    async def broken() -> AsyncIterator[bytes]:
        yield text_event(" ba")
        raise httpx.ReadError("reset")

    async with router(lambda r: httpx.Response(200, content=broken())) as client:
        result = await _one(client, "http://r", REQUEST, "ba", started=0.0)
    assert not result.ok and result.error.startswith("ReadError") and result.output_tokens == 1
    assert result.ttft_s is None and result.e2e_s is None


async def test_an_error_event_fails_the_request_even_with_a_done_after_it() -> None:
    error = b"data: " + orjson.dumps({"error": {"message": "engine lost", "code": 502}}) + b"\n\n"
    body = text_event(" ba") + error + b"data: [DONE]\n\n"
    async with router(lambda r: httpx.Response(200, content=body)) as client:
        result = await _one(client, "http://r", REQUEST, "ba", started=0.0)
    assert not result.ok and "engine lost" in result.error and result.output_tokens == 1
