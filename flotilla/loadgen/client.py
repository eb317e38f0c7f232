"""One streamed completion of the load generator, timed from the client's side.

The request is an OpenAI `/v1/completions` call with `stream: true`, `include_usage`, and
`ignore_eos`, so the engine generates exactly `max_tokens` and a short answer is visible as lost.
The stream is read by the shared `loadgen.stream` reader (timestamps taken as each line is read);
this module only builds the request and turns what came back into a `RequestRecord`.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from flotilla.loadgen.record import RequestRecord
from flotilla.loadgen.stream import Clock, StreamedCompletion, send_streaming
from flotilla.loadgen.workload import PlannedRequest


def completion_body(model: str, request: PlannedRequest) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def to_record(request: PlannedRequest, result: StreamedCompletion, started: float) -> RequestRecord:
    """The load generator's verdict on one stream: the last error wins, a missing `[DONE]` is one."""
    record = RequestRecord(
        index=request.index,
        sent_s=result.sent - started,
        expected_tokens=request.max_tokens,
        status=result.status,
        ttft_s=result.ttft,
        e2e_s=result.ended - result.sent,
        itl_s=result.gaps,
        chunks=len(result.text_at),
        finish_reason=result.finish_reason,
        done=result.done,
    )
    record.output_tokens = record.chunks if result.completion_tokens is None else result.completion_tokens
    if result.exception is not None:
        record.error = f"{type(result.exception).__name__}: {result.exception}"[:200]
    elif result.status != 200:
        record.error = f"HTTP {result.status}: {result.body[:200]}"
    elif result.error_events:
        record.error = f"error event: {str(result.error_events[-1])[:200]}"
    elif not result.done:
        record.error = "stream ended without [DONE]"
    return record


async def stream_completion(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    request: PlannedRequest,
    *,
    started: float,
    clock: Clock = time.perf_counter,
) -> RequestRecord:
    """Send `request` to `url` (the base URL) and record what came back; never raises for HTTP."""
    result = await send_streaming(client, url, completion_body(model, request), clock=clock)
    return to_record(request, result, started)
