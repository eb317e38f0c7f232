"""The open loop: requests go out at their times whatever the server's speed, a later turn waits
for its earlier one, and what is still running at the drain timeout is recorded as lost."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson

from flotilla.loadgen.openloop import run_open_loop
from flotilla.loadgen.workload import PlannedRequest


def fake_engine(delays: dict[str, float], log: list[tuple[str, float]]) -> httpx.AsyncClient:
    """Answers each prompt with one token after its delay; logs (prompt, send time)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        prompt = orjson.loads(request.content)["prompt"]
        log.append((prompt, time.perf_counter()))
        await asyncio.sleep(delays.get(prompt, 0.0))
        body = b'data: {"choices":[{"text":" ba","finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
        return httpx.Response(200, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def req(i: int, at: float, prompt: str, parent: int | None = None) -> PlannedRequest:
    return PlannedRequest(index=i, at_s=at, prompt=prompt, prompt_tokens=1, max_tokens=1, parent=parent)


async def test_slow_answers_do_not_delay_later_arrivals() -> None:
    log: list[tuple[str, float]] = []
    plan = [req(0, 0.0, "slow"), req(1, 0.05, "a"), req(2, 0.10, "b")]
    async with fake_engine({"slow": 0.5}, log) as client:
        start = time.perf_counter()
        records = await run_open_loop(client, "http://x", "m", plan)
    sent = {p: t - start for p, t in log}
    assert sent["b"] < 0.4  # not held behind the slow first request
    assert [r.index for r in records] == [0, 1, 2] and all(r.ok for r in records)
    assert records[0].e2e_s is not None and records[0].e2e_s >= 0.5


async def test_a_later_turn_waits_for_its_earlier_turn() -> None:
    log: list[tuple[str, float]] = []
    plan = [req(0, 0.0, "turn1"), req(1, 0.01, "turn2", parent=0)]
    async with fake_engine({"turn1": 0.3}, log) as client:
        records = await run_open_loop(client, "http://x", "m", plan)
    sent = dict(log)
    assert sent["turn2"] - sent["turn1"] >= 0.3
    assert all(r.ok for r in records)


async def test_requests_past_the_drain_timeout_are_lost() -> None:
    log: list[tuple[str, float]] = []
    plan = [req(0, 0.0, "stuck"), req(1, 0.0, "fine")]
    async with fake_engine({"stuck": 30.0}, log) as client:
        records = await run_open_loop(client, "http://x", "m", plan, drain_timeout_s=0.3)
    assert records[1].ok and not records[1].lost
    assert records[0].lost and "drain timeout" in records[0].error


async def test_several_urls_are_dealt_in_turn() -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(200, content=b'data: {"choices":[{"text":" ba"}]}\n\ndata: [DONE]\n\n')

    plan = [req(i, 0.0, f"p{i}") for i in range(4)]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        records = await run_open_loop(client, ["http://e0", "http://e1"], "m", plan)
    assert sorted(hosts) == ["e0", "e0", "e1", "e1"] and all(r.ok for r in records)
