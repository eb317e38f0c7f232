"""Send planned requests on schedule, whatever the target's speed (open loop).

Every request is a task that sleeps until its arrival time and then streams; a slow target does not
slow arrivals, so queueing shows up as latency, as it would for real users. The one exception is a
later turn of a conversation: it is sent at its arrival time or when its previous turn finished,
whichever is later (a user does not send turn 2 before reading turn 1). Requests still running
`drain_timeout_s` after the last arrival are cancelled and recorded as lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import httpx

from flotilla.loadgen.client import stream_completion
from flotilla.loadgen.record import RequestRecord
from flotilla.loadgen.stream import Clock
from flotilla.loadgen.workload import PlannedRequest


def http_client(timeout_s: float) -> httpx.AsyncClient:
    """One pooled client for a whole run: no connection limit, so the loop stays open."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=512)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s, connect=5.0), trust_env=False)


async def run_open_loop(
    client: httpx.AsyncClient,
    url: str | Sequence[str],
    model: str,
    requests: Sequence[PlannedRequest],
    *,
    drain_timeout_s: float = 120.0,
    clock: Clock = time.perf_counter,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> list[RequestRecord]:
    """Stream every request to `url` at its time; one record per request, in request order.

    Several URLs are dealt in turn (request i to url[i % n]): the client-side round robin of the
    `direct` arm, which measures the engines without any router in between."""
    urls = [url] if isinstance(url, str) else list(url)
    started = clock()
    finished = [asyncio.Event() for _ in requests]
    records: list[RequestRecord | None] = [None] * len(requests)

    async def fire(request: PlannedRequest) -> None:
        try:
            delay = request.at_s - (clock() - started)
            if delay > 0:
                await asyncio.sleep(delay)
            if request.parent is not None:
                await finished[request.parent].wait()
            target = urls[request.index % len(urls)]
            record = await stream_completion(client, target, model, request, started=started, clock=clock)
            records[request.index] = record
            if on_done is not None:
                on_done(record)
        finally:
            finished[request.index].set()

    tasks = [asyncio.create_task(fire(r)) for r in requests]
    last_arrival = max((r.at_s for r in requests), default=0.0)
    deadline = last_arrival + drain_timeout_s
    try:
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - (clock() - started)))
    finally:  # also when the run itself is cancelled: no request outlives it
        pending = {t for t in tasks if not t.done()}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return [
        rec
        if rec is not None
        else RequestRecord(
            index=r.index,
            sent_s=float("nan"),
            expected_tokens=r.max_tokens,
            error="not finished within the drain timeout",
        )
        for r, rec in zip(requests, records, strict=True)
    ]
