"""The shared SSE reader: what it records for each way a stream can go, against a fake server
(httpx MockTransport) with a clock the server advances, so every time is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import orjson

from flotilla.loadgen.stream import aiter_sse_lines, send_streaming, sse_lines

BODY = {"model": "m", "prompt": "ba", "max_tokens": 2, "stream": True}


class FakeClock:
    def __init__(self) -> None:
        self.t = 10.0

    def __call__(self) -> float:
        return self.t


def text_event(text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "text": text, "finish_reason": finish}
    return b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n"


def fake(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def scripted(clock: FakeClock, script: Sequence[tuple[float, bytes]]) -> httpx.AsyncClient:
    async def body() -> AsyncIterator[bytes]:
        for at, chunk in script:
            clock.t = at
            yield chunk

    return fake(lambda request: httpx.Response(200, content=body()))


async def test_text_pieces_their_times_usage_and_done_are_recorded() -> None:
    clock = FakeClock()
    script = [
        (10.5, text_event(" ba")),
        (10.75, b": keep-alive comment\n\n" + text_event(" be", finish="length")),
        (10.8, b'data:{"choices": [], "usage": {"completion_tokens": 2}}\n\n'),
        (11.0, b"data: [DONE]\n\n"),
    ]
    async with scripted(clock, script) as client:
        result = await send_streaming(client, "http://x", BODY, clock=clock)
    assert result.status == 200 and result.done and result.exception is None
    assert result.text == [" ba", " be"] and result.text_at == [10.5, 10.75]
    assert result.ttft == 0.5 and result.gaps == [0.25]
    assert result.completion_tokens == 2 and result.finish_reason == "length"
    assert result.sent == 10.0 and result.ended == 11.0
    assert not result.error_events and not result.refused


async def test_the_request_is_the_body_posted_to_the_completions_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"data: [DONE]\n\n")

    async with fake(handler) as client:
        await send_streaming(client, "http://router:8000", BODY)
    assert str(seen[0].url) == "http://router:8000/v1/completions"
    assert orjson.loads(seen[0].content) == BODY


async def test_error_events_are_kept_in_order_and_reading_goes_on() -> None:
    clock = FakeClock()
    script = [
        (10.1, text_event(" ba")),
        (10.2, b'data: {"error": {"message": "engine died"}}\n\n'),
        (10.3, b'data: {"error": "second"}\n\n'),
    ]
    async with scripted(clock, script) as client:
        result = await send_streaming(client, "http://x", BODY, clock=clock)
    assert result.error_events == [{"message": "engine died"}, "second"]
    assert result.text == [" ba"] and not result.done and result.ended == 10.3


async def test_a_non_200_keeps_its_body_and_retry_after() -> None:
    async with fake(
        lambda r: httpx.Response(503, headers={"retry-after": "1"}, content=b"draining")
    ) as client:
        result = await send_streaming(client, "http://x", BODY)
    assert result.status == 503 and result.body == "draining" and result.retry_after == "1"
    assert result.refused and not result.text
    async with fake(lambda r: httpx.Response(503, content=b"overloaded")) as client:
        result = await send_streaming(client, "http://x", BODY)
    assert result.status == 503 and result.retry_after is None and not result.refused


async def test_a_connection_refused_or_closed_before_any_response_is_a_refusal() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def close(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("closed", request=request)

    for handler, kind in ((refuse, httpx.ConnectError), (close, httpx.RemoteProtocolError)):
        async with fake(handler) as client:
            result = await send_streaming(client, "http://x", BODY)
        assert isinstance(result.exception, kind) and result.status == 0 and result.refused


async def test_a_stream_broken_after_the_answer_began_is_not_a_refusal() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield text_event(" ba")
        raise httpx.RemoteProtocolError("peer closed")

    async with fake(lambda request: httpx.Response(200, content=body())) as client:
        result = await send_streaming(client, "http://x", BODY)
    assert isinstance(result.exception, httpx.RemoteProtocolError)
    assert result.status == 200 and result.text == [" ba"] and not result.refused


async def test_a_malformed_event_is_recorded_not_raised() -> None:
    async with fake(lambda r: httpx.Response(200, content=b"data: {not json\n\n")) as client:
        result = await send_streaming(client, "http://x", BODY)
    assert isinstance(result.exception, orjson.JSONDecodeError) and not result.done


async def test_lines_split_on_line_feeds_only() -> None:
    """U+2028 and U+0085 are legal unescaped inside a JSON string: not line ends in SSE."""
    text = 'data: {"t": "a\u2028b\u0085c"}\n\ndata: [DONE]\n\n'
    assert sse_lines(text)[0] == 'data: {"t": "a\u2028b\u0085c"}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=text.encode())

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
        client.stream("GET", "http://x/") as response,
    ):
        lines = [line async for line in aiter_sse_lines(response)]
    assert lines == sse_lines(text)[:-1] and orjson.loads(lines[0][6:])["t"] == "a\u2028b\u0085c"
