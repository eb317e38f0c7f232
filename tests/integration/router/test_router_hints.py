"""Client hints through the router, in front of a real engine process: they change the queue's order,
and a malformed one is a 400 naming it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

MODEL = "sim"


async def _queued_order(
    url: str, router: Any, c: httpx.AsyncClient, requests: list[tuple[str, dict[str, str], dict[str, Any]]]
) -> list[str]:
    """Hold the only slot, queue `requests` (name, headers, extra body) one by one, and return the
    order in which they finish (one slot: the order they left the queue)."""
    done: list[str] = []

    async def send(name: str, headers: dict[str, str], extra: dict[str, Any], tokens: int) -> None:
        body = {"model": MODEL, "prompt": "same prompt", "max_tokens": tokens, "ignore_eos": True, **extra}
        r = await c.post(url + "/v1/completions", json=body, headers=headers)
        assert r.status_code == 200, r.text
        done.append(name)

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the router did not get there in 5 s")

    holder = asyncio.create_task(send("holder", {}, {}, 40))
    await until(lambda: any(r.inflight for r in router.table.all()))
    tasks = []
    for k, (name, headers, extra) in enumerate(requests):
        tasks.append(asyncio.create_task(send(name, headers, extra, 4)))
        await until(lambda k=k: router.admission.depth(MODEL) >= k + 1)  # queued in this order
    await asyncio.gather(holder, *tasks)
    return done[1:]


async def test_priority_and_output_hints_order_the_router_queue(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(1, "--time-scale", "1", "--decode-step-ms", "20")
    cfg = router_config(
        procs,
        max_inflight_per_instance=1,
        queue_order="shortest_predicted_first",
        queue_order_params={"aging_per_s": 0.0},
    )
    async with serve_router(cfg) as (router, url), httpx.AsyncClient(timeout=30) as c:
        order = await _queued_order(
            url,
            router,
            c,
            [
                ("plain", {}, {}),  # predicted by the proxy: the prompt's few tokens
                ("long-told", {"x-expected-output-tokens": "900"}, {}),
                ("dynamo-short", {}, {"nvext": {"agent_hints": {"osl": 1}}}),
                ("urgent", {"x-request-priority": "5", "x-expected-output-tokens": "900"}, {}),
            ],
        )
    # The higher tier first whatever its length; then shortest predicted first, the client's
    # estimates standing in for the predictor's.
    assert order == ["urgent", "dynamo-short", "plain", "long-told"]


async def test_hints_are_ignored_when_the_config_says_so(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(1, "--time-scale", "1", "--decode-step-ms", "20")
    cfg = router_config(procs, max_inflight_per_instance=1, client_hints=False)
    async with serve_router(cfg) as (router, url), httpx.AsyncClient(timeout=30) as c:
        order = await _queued_order(
            url, router, c, [("first", {}, {}), ("urgent", {"x-request-priority": "9"}, {})]
        )
    assert order == ["first", "urgent"]


@pytest.mark.parametrize(
    "case",
    [
        ({"x-expected-output-tokens": "lots"}, {}, "x-expected-output-tokens"),
        ({"x-expected-output-tokens": "0"}, {}, "x-expected-output-tokens"),
        ({"x-request-priority": "1.5"}, {}, "x-request-priority"),
        ({"x-request-priority": "99999999"}, {}, "x-request-priority"),
        ({"x-slo-ttft-ms": "-3"}, {}, "x-slo-ttft-ms"),
        ({"x-slo-tpot-ms": "nan"}, {}, "x-slo-tpot-ms"),
        ({}, {"nvext": {"agent_hints": {"osl": "many"}}}, "nvext.agent_hints.osl"),
        ({}, {"nvext": {"agent_hints": {"priority": True}}}, "nvext.agent_hints.priority"),
        ({}, {"nvext": []}, "nvext"),
    ],
)
async def test_a_malformed_hint_is_a_400_naming_it(
    engines: Any,
    router_config: Any,
    serve_router: Any,
    case: tuple[dict[str, str], dict[str, Any], str],
) -> None:
    headers, extra, param = case
    procs = await engines(1, "--time-scale", "0")
    async with serve_router(router_config(procs)) as (_, url), httpx.AsyncClient(timeout=30) as c:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 2, **extra}
        r = await c.post(url + "/v1/completions", json=body, headers=headers)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param and param.rsplit(".", maxsplit=1)[-1] in error["message"]
        ok = await c.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2})
        assert ok.status_code == 200  # nothing lost: the router serves on
