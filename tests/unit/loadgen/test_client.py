"""The streaming client's timings and loss detection, against a fake SSE server (httpx MockTransport)
with a clock the server advances, so every number is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import orjson

from flotilla.loadgen.client import stream_completion
from flotilla.loadgen.workload import PlannedRequest


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def event(text: str | None = None, finish: str | None = None, usage: int | None = None) -> bytes:
    body: dict[str, object] = {"choices": []}
    if text is not None or finish is not None:
        body["choices"] = [{"index": 0, "text": text or "", "finish_reason": finish}]
    if usage is not None:
        body["usage"] = {"prompt_tokens": 5, "completion_tokens": usage, "total_tokens": 5 + usage}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def server(clock: FakeClock, script: Sequence[tuple[float, bytes]], status: int = 200) -> httpx.AsyncClient:
    """Each (time, bytes) of the script: the clock is set to time, then the bytes are sent."""
    seen: list[dict[str, object]] = []

    async def body() -> AsyncIterator[bytes]:
        for at, chunk in script:
            clock.t = at
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(orjson.loads(request.content))
        return httpx.Response(status, content=body())

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client.seen = seen  # type: ignore[attr-defined]
    return client


REQUEST = PlannedRequest(index=3, at_s=0.0, prompt="ba be bi", prompt_tokens=3, max_tokens=3)


async def test_ttft_itl_e2e_and_usage_are_measured_from_the_stream() -> None:
    clock = FakeClock()
    script = [
        (100.25, event(text=" ba")),
        (100.35, event(text=" be")),
        (100.60, event(text=" bi", finish="length")),
        (100.61, event(usage=3)),
        (100.70, b"data: [DONE]\n\n"),
    ]
    async with server(clock, script) as client:
        record = await stream_completion(client, "http://x", "m", REQUEST, started=99.0, clock=clock)
        sent = client.seen[0]  # type: ignore[attr-defined]
    assert sent["stream"] is True and sent["ignore_eos"] is True and sent["max_tokens"] == 3
    assert sent["stream_options"] == {"include_usage": True}
    assert record.index == 3 and record.sent_s == 1.0
    assert record.ttft_s == 0.25
    assert [round(x, 6) for x in record.itl_s] == [0.1, 0.25]
    assert abs(record.e2e_s - 0.70) < 1e-9  # type: ignore[operator]
    assert record.output_tokens == 3 and record.chunks == 3
    assert record.finish_reason == "length"
    assert record.ok and not record.lost


async def test_without_usage_the_text_chunks_are_counted() -> None:
    clock = FakeClock()
    script = [
        (100.1, event(text=" ba")),
        (100.2, event(text=" be", finish="length")),
        (100.3, b"data: [DONE]\n\n"),
    ]
    request = PlannedRequest(index=0, at_s=0.0, prompt="x", prompt_tokens=1, max_tokens=2)
    async with server(clock, script) as client:
        record = await stream_completion(client, "http://x", "m", request, started=100.0, clock=clock)
    assert record.output_tokens == 2 and not record.lost


async def test_a_stream_cut_before_done_is_lost() -> None:
    clock = FakeClock()
    script = [(100.1, event(text=" ba")), (100.2, event(text=" be"))]
    async with server(clock, script) as client:
        record = await stream_completion(client, "http://x", "m", REQUEST, started=100.0, clock=clock)
    assert not record.done and record.error == "stream ended without [DONE]"
    assert record.lost and not record.ok


async def test_a_short_answer_is_lost_even_when_the_stream_completes() -> None:
    clock = FakeClock()
    script = [
        (100.1, event(text=" ba", finish="stop")),
        (100.2, event(usage=1)),
        (100.3, b"data: [DONE]\n\n"),
    ]
    async with server(clock, script) as client:
        record = await stream_completion(client, "http://x", "m", REQUEST, started=100.0, clock=clock)
    assert record.ok and record.lost  # 1 of the 3 tokens asked for


async def test_an_error_status_and_an_error_event_are_recorded() -> None:
    clock = FakeClock()
    async with server(clock, [(100.1, b'{"error": "busy"}')], status=429) as client:
        record = await stream_completion(client, "http://x", "m", REQUEST, started=100.0, clock=clock)
    assert record.status == 429 and "busy" in record.error and record.lost
    script = [
        (100.1, event(text=" ba")),
        (100.2, b'data: {"error": {"message": "engine died"}}\n\n'),
        (100.3, b"data: [DONE]\n\n"),
    ]
    async with server(clock, script) as client:
        record = await stream_completion(client, "http://x", "m", REQUEST, started=100.0, clock=clock)
    assert "engine died" in record.error and not record.ok


async def test_a_connection_failure_is_recorded_not_raised() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        record = await stream_completion(client, "http://x", "m", REQUEST, started=0.0)
    assert record.status == 0 and record.error.startswith("ConnectError") and record.lost
