"""One streamed OpenAI `/v1/completions` call, exactly as the client saw it.

This is the one SSE reader behind every streaming client in flotilla: the load generator
(`loadgen.client`: TTFT, inter-token gaps, loss), the chaos workload (exact text, failover when a
router replica refuses) and the local demo's traffic. It records facts only (status, text pieces
and when each arrived, usage, `[DONE]`, error events, the transport error) and decides nothing:
each caller turns a `StreamedCompletion` into its own record, so their verdicts can differ without
three copies of the parsing and timing.

Timestamps are taken when a line is read, before it is parsed, with `time.perf_counter` behind a
seam so tests can drive it. HTTP failures and malformed events are recorded, never raised.

Lines are split on line feeds only (`sse_lines`, `aiter_sse_lines`), as SSE defines them:
`str.splitlines` and httpx's `aiter_lines` also split on U+2028, U+2029 and U+0085, which JSON
leaves unescaped inside strings and a model may well generate.
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

Clock = Callable[[], float]
_EOL = re.compile(r"\r\n|\r|\n")


def sse_lines(text: str) -> list[str]:
    """The lines of an SSE body (split on CR, LF or CRLF only)."""
    return _EOL.split(text)


async def aiter_sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    """A streamed response's lines as they arrive (split on CR, LF or CRLF only)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    async for chunk in response.aiter_bytes():
        pending += decoder.decode(chunk)
        *lines, pending = _EOL.split(pending)
        for line in lines:
            yield line
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


@dataclass
class StreamedCompletion:
    """What came back for one request. Times are clock readings (seconds), not durations."""

    sent: float
    """When the request was sent."""
    ended: float = 0.0
    """When the stream closed or failed."""
    status: int = 0
    """The HTTP status; 0 when no response came."""
    retry_after: str | None = None
    body: str = ""
    """The response body of a non-200 answer."""
    text: list[str] = field(default_factory=list)
    """The text of each chunk that carried text, in order."""
    text_at: list[float] = field(default_factory=list)
    """When each of those chunks' lines was read."""
    completion_tokens: int | None = None
    """`usage.completion_tokens` of the last usage event (`include_usage`), if any."""
    finish_reason: str | None = None
    done: bool = False
    """The stream ended with `data: [DONE]`."""
    error_events: list[Any] = field(default_factory=list)
    """The `error` payloads of in-stream error events, in order."""
    exception: httpx.HTTPError | orjson.JSONDecodeError | None = None

    @property
    def ttft(self) -> float | None:
        """Send to the first chunk that carried text."""
        return self.text_at[0] - self.sent if self.text_at else None

    @property
    def gaps(self) -> list[float]:
        """Times between consecutive text chunks."""
        return [b - a for a, b in zip(self.text_at, self.text_at[1:], strict=False)]

    @property
    def refused(self) -> bool:
        """The server took no part in the request, so it is safe to send it elsewhere: the
        connection was refused or closed before any response, or a 503 asked to retry later."""
        exc = self.exception
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return True
        if isinstance(exc, httpx.RemoteProtocolError) and self.status == 0:
            return True
        return self.status == 503 and self.retry_after is not None


def _apply(result: StreamedCompletion, event: dict[str, Any], now: float) -> None:
    usage = event.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        result.completion_tokens = usage["completion_tokens"]
    for choice in event.get("choices") or ():
        if choice.get("text"):
            result.text.append(choice["text"])
            result.text_at.append(now)
        if choice.get("finish_reason"):
            result.finish_reason = str(choice["finish_reason"])


async def send_streaming(
    client: httpx.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    *,
    clock: Clock = time.perf_counter,
) -> StreamedCompletion:
    """POST `body` (a streaming completion request) to `url` (the base URL) and read the stream to
    its end; never raises for HTTP or malformed events."""
    result = StreamedCompletion(sent=clock())
    try:
        content = orjson.dumps(body)
        headers = {"content-type": "application/json"}
        async with client.stream(
            "POST", url + "/v1/completions", content=content, headers=headers
        ) as response:
            result.status = response.status_code
            result.retry_after = response.headers.get("retry-after")
            if response.status_code != 200:
                result.body = (await response.aread()).decode(errors="replace")
                return result
            async for line in aiter_sse_lines(response):
                now = clock()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    result.done = True
                    break
                event = orjson.loads(data)
                if not isinstance(event, dict):
                    continue
                if "error" in event:
                    result.error_events.append(event["error"])
                    continue
                _apply(result, event, now)
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        result.exception = exc
    finally:
        result.ended = clock()
    return result
