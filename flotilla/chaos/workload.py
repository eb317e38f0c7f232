"""The chaos workload: a real trace at a steady rate, streamed through one or more routers.

Arrivals are the trace's own (Mooncake conversation by default), with the timeline stretched so
the mean rate is `rps`: bursts keep their shape, the load stays steady over a phase. Prompts are
built from the trace's prefix blocks (`demo_trace.PromptBuilder`); outputs are capped so a request
lasts a few seconds and crosses several slices.

Every answer is checked, not just its status: the simulated engine's "model" is a deterministic
function of the context (`enginesim.textmodel`), so the exact text a greedy, `ignore_eos` request
must produce is known in advance. A stream cut by a fault and resumed on another instance passes
only if the client got exactly that text and a `[DONE]`.

Clients reach the routers as through a Service: round-robin over the replicas, and a request the
chosen replica refused before answering (connection refused or closed before any response, e.g. a
replica draining) goes to the next replica. Those are counted as `refused_retried`, not as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from flotilla.enginesim.textmodel import TextModel
from flotilla.enginesim.tokenizer import Tokenizer
from flotilla.loadgen.stream import send_streaming
from flotilla.localcluster.demo_trace import PromptBuilder, TraceFit, TraceRequest, load_trace

DEFAULT_TRACE = Path("../shared/data/traces/mooncake_conversation_trace.jsonl")


@dataclass(frozen=True)
class LoadSpec:
    """What load to offer: how fast, how long each request, from which trace."""

    rps: float = 3.0
    max_input_tokens: int = 1024
    max_output_tokens: int = 160
    trace: Path = DEFAULT_TRACE


def steady_requests(spec: LoadSpec, model: str, duration_s: float) -> list[TraceRequest]:
    """The first `rps * duration_s` trace requests, arrivals rescaled to a mean of `spec.rps`."""
    count = max(1, round(spec.rps * duration_s))
    fit = TraceFit(
        duration_s=1e9, max_input_tokens=spec.max_input_tokens, max_output_tokens=spec.max_output_tokens
    )
    rows: list[TraceRequest] = []
    for row in load_trace(spec.trace, [model], fit):
        rows.append(row)
        if len(rows) == count:
            break
    if not rows:
        raise ValueError(f"no requests in {spec.trace}")
    span = rows[-1].at_s - rows[0].at_s
    # The trace's span over `count` arrivals becomes `count / rps` seconds.
    stretch = (count / spec.rps) / span if span > 0 else 0.0
    t0 = rows[0].at_s
    return [
        replace(r, at_s=(r.at_s - t0) * stretch if span > 0 else i / spec.rps) for i, r in enumerate(rows)
    ]


class ExpectedText:
    """The exact greedy, `ignore_eos` output of the simulated engine (seed 0) for a prompt."""

    def __init__(self, seed: int = 0) -> None:
        self._tok = Tokenizer()
        self._model = TextModel(self._tok, seed=seed)
        self._rng = random.Random(0)  # unused at temperature 0

    def __call__(self, prompt: list[int], max_tokens: int) -> str:
        context = list(prompt)
        out: list[int] = []
        for _ in range(max_tokens):
            token = self._model.next_token(context, temperature=0.0, rng=self._rng, allow_eos=False)
            context.append(token)
            out.append(token)
        return self._tok.decode(out)


@dataclass
class Outcome:
    """What one client saw for one request (times in seconds from the load's start)."""

    index: int
    sent_s: float
    status: int = 0
    done_s: float | None = None
    ttft_s: float | None = None
    complete: bool = False
    """A 200, a `[DONE]`, and exactly the expected text."""
    refused_retried: int = 0
    error: str = ""
    router: str = ""

    @property
    def latency_s(self) -> float | None:
        return None if self.done_s is None else self.done_s - self.sent_s


@dataclass
class LoadRun:
    """The outcomes of one load phase, filled in as requests finish."""

    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.started


class _Refused(Exception):
    """The replica took no part in the request: safe to send it elsewhere."""


class RouterPool:
    """Round-robin over router replicas with failover on refusal, as a Service plus a retrying
    client would do."""

    def __init__(self, urls: Sequence[str], client: httpx.AsyncClient) -> None:
        self.urls = list(urls)
        self._client = client
        self._next = itertools.cycle(range(len(self.urls)))

    async def stream(self, body: dict[str, object], outcome: Outcome, started: float, expected: str) -> None:
        attempts = 0
        first = next(self._next)
        while True:
            url = self.urls[(first + attempts) % len(self.urls)]
            try:
                await self._stream_once(url, body, outcome, started, expected)
                return
            except _Refused as exc:
                attempts += 1
                outcome.refused_retried += 1
                if attempts >= 4 * len(self.urls):
                    outcome.error = f"refused by every router: {exc}"
                    return
                if attempts % len(self.urls) == 0:
                    await asyncio.sleep(0.25)

    async def _stream_once(
        self, url: str, body: dict[str, object], outcome: Outcome, started: float, expected: str
    ) -> None:
        outcome.router = url
        result = await send_streaming(self._client, url, body)
        outcome.status = result.status
        if result.refused:
            raise _Refused("503 with Retry-After" if result.exception is None else repr(result.exception))
        if result.ttft is not None and outcome.ttft_s is None:
            outcome.ttft_s = result.text_at[0] - started - outcome.sent_s
        outcome.done_s = result.ended - started
        exc = result.exception
        if isinstance(exc, httpx.RemoteProtocolError):
            outcome.error = f"stream broken: {exc!r}"
        elif exc is not None:
            outcome.error = f"{type(exc).__name__}: {exc!r}"
        elif result.status != 200:
            outcome.error = result.body[:300]
        elif result.error_events:
            outcome.error = str(result.error_events[0])[:300]
        elif not result.done:
            outcome.error = "stream ended without [DONE]"
        elif (got := "".join(result.text)) != expected:
            outcome.error = f"text differs from the unfaulted answer ({len(got)} vs {len(expected)} chars)"
        outcome.complete = not outcome.error and outcome.status == 200


async def run_load(
    router_urls: Sequence[str],
    requests: Sequence[TraceRequest],
    run: LoadRun,
    *,
    stop: asyncio.Event | None = None,
    request_timeout_s: float = 120.0,
) -> LoadRun:
    """Send every request at its arrival time (open loop) until `stop` is set (or the requests run
    out), then wait for all that were sent."""
    builder = PromptBuilder()
    expected_of = ExpectedText()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    timeout = httpx.Timeout(request_timeout_s, connect=2.0)
    stop = stop or asyncio.Event()
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        pool = RouterPool(router_urls, client)
        run.started = time.perf_counter()

        async def fire(i: int, request: TraceRequest) -> None:
            delay = request.at_s - run.now()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            prompt = builder.prompt(request)
            expected = expected_of(prompt, request.output_tokens)
            outcome = Outcome(index=i, sent_s=run.now())
            run.outcomes.append(outcome)
            body: dict[str, object] = {
                "model": request.model,
                "prompt": prompt,
                "max_tokens": request.output_tokens,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
            }
            await pool.stream(body, outcome, run.started, expected)

        await asyncio.gather(*(fire(i, r) for i, r in enumerate(requests)))
    return run
