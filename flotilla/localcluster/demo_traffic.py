"""Replay trace requests through the router as an OpenAI client would, streaming, on schedule.

Each request is sent at its trace arrival time (open loop: a slow fleet does not slow arrivals),
as a streamed `/v1/completions` call with `max_tokens` = the trace's output length and
`ignore_eos`, so the engines generate exactly what production did. The stream is read by the
shared `loadgen.stream` reader: time to first token is taken at the first streamed chunk that
carries text, end-to-end latency at the end of the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flotilla.loadgen.stream import send_streaming
from flotilla.localcluster.demo_trace import ENGINESIM_VOCAB, PromptBuilder, TraceRequest


@dataclass(frozen=True)
class RequestResult:
    model: str
    sent_at_s: float
    ok: bool
    status: int
    ttft_s: float | None
    e2e_s: float | None
    output_tokens: int
    error: str = ""


async def _one(
    client: httpx.AsyncClient, url: str, request: TraceRequest, prompt: list[int], started: float
) -> RequestResult:
    body = {
        "model": request.model,
        "prompt": prompt,
        "max_tokens": request.output_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    result = await send_streaming(client, url, body)
    sent_at_s = result.sent - started
    chunks = len(result.text_at)
    if result.exception is not None:
        return RequestResult(
            request.model, sent_at_s, False, result.status, None, None, chunks, repr(result.exception)
        )
    if result.status != 200:
        return RequestResult(request.model, sent_at_s, False, result.status, None, None, 0, result.body[:200])
    # An error event mid-stream fails the request even if a [DONE] followed it.
    ok = result.done and not result.error_events
    if result.error_events:
        detail = str(result.error_events[0])[:200]
    else:
        detail = "" if result.done else "stream ended without [DONE]"
    return RequestResult(
        request.model, sent_at_s, ok, result.status, result.ttft, result.ended - result.sent, chunks, detail
    )


async def replay(
    router_url: str,
    requests: Sequence[TraceRequest],
    console: Console,
    *,
    vocab: tuple[int, int] = ENGINESIM_VOCAB,
    drain_timeout_s: float = 120.0,
) -> list[RequestResult]:
    """Send every request at its time with a live progress bar; wait for all of them to finish.
    Prompts are token ids from the engines' `vocab`."""
    builder = PromptBuilder(vocab)
    prompts = [builder.prompt(r) for r in requests]  # built up front: no CPU spikes mid-replay
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    timeout = httpx.Timeout(drain_timeout_s, connect=5.0)
    results: list[RequestResult] = []
    columns = (
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        with Progress(*columns, console=console) as progress:
            sent_bar = progress.add_task("sent", total=len(requests), detail="")
            done_bar = progress.add_task("completed", total=len(requests), detail="")
            started = time.perf_counter()

            async def fire(request: TraceRequest, prompt: list[int]) -> None:
                delay = request.at_s - (time.perf_counter() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
                progress.advance(sent_bar)
                result = await _one(client, router_url, request, prompt, started)
                results.append(result)
                failed = sum(not r.ok for r in results)
                ttfts = sorted(r.ttft_s for r in results if r.ttft_s is not None)
                median = f"TTFT p50 {ttfts[len(ttfts) // 2] * 1000:.0f} ms" if ttfts else ""
                progress.update(done_bar, advance=1, detail=f"{median}  failed {failed}")

            await asyncio.gather(*(fire(r, p) for r, p in zip(requests, prompts, strict=True)))
    return results
