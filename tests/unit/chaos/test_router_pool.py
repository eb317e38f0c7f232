"""The chaos client against fake routers (httpx MockTransport): a replica that refuses before
answering is skipped for the next one, and an answer counts only with exactly the expected text."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson

from flotilla.chaos.workload import Outcome, RouterPool

BODY: dict[str, object] = {"model": "m", "prompt": "ba", "max_tokens": 2, "stream": True}


def sse(*texts: str, done: bool = True) -> bytes:
    events = [b"data: " + orjson.dumps({"choices": [{"index": 0, "text": t}]}) + b"\n\n" for t in texts]
    return b"".join(events) + (b"data: [DONE]\n\n" if done else b"")


def routers(answers: dict[str, Callable[[httpx.Request], httpx.Response]]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda r: answers[r.url.host](r)))


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def answer(body: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, content=body)


async def test_a_503_with_retry_after_goes_to_the_next_router() -> None:
    draining = httpx.Response(503, headers={"retry-after": "1"}, content=b"draining")
    async with routers({"a": lambda r: draining, "b": answer(sse(" ba", " be"))}) as client:
        pool = RouterPool(["http://a", "http://b"], client)
        outcome = Outcome(index=0, sent_s=0.0)
        await pool.stream(BODY, outcome, started=0.0, expected=" ba be")
    assert outcome.complete and outcome.error == "" and outcome.status == 200
    assert outcome.refused_retried == 1 and outcome.router == "http://b"
    assert outcome.ttft_s is not None and outcome.done_s is not None and outcome.done_s >= outcome.ttft_s


async def test_a_refused_connection_is_retried_but_a_plain_503_is_an_error() -> None:
    async with routers({"a": refuse, "b": answer(sse(" ba"))}) as client:
        outcome = Outcome(index=0, sent_s=0.0)
        await RouterPool(["http://a", "http://b"], client).stream(BODY, outcome, 0.0, " ba")
    assert outcome.complete and outcome.refused_retried == 1
    overloaded = httpx.Response(503, content=b"overloaded")
    async with routers({"a": lambda r: overloaded, "b": answer(sse(" ba"))}) as client:
        outcome = Outcome(index=0, sent_s=0.0)
        await RouterPool(["http://a", "http://b"], client).stream(BODY, outcome, 0.0, " ba")
    assert not outcome.complete and outcome.status == 503 and outcome.error == "overloaded"
    assert outcome.refused_retried == 0 and outcome.router == "http://a"


async def test_only_the_exact_text_with_done_is_complete() -> None:
    cases = {
        sse(" ba", " bi"): "text differs from the unfaulted answer (6 vs 6 chars)",
        sse(" ba", " be", done=False): "stream ended without [DONE]",
        sse(" ba", done=False) + b'data: {"error": {"message": "cut"}}\n\n': "{'message': 'cut'}",
    }
    for body, error in cases.items():
        async with routers({"a": answer(body)}) as client:
            outcome = Outcome(index=0, sent_s=0.0)
            await RouterPool(["http://a"], client).stream(BODY, outcome, 0.0, " ba be")
        assert not outcome.complete and outcome.error == error and outcome.status == 200


async def test_a_request_every_router_refuses_is_an_error_after_bounded_retries() -> None:
    async with routers({"a": refuse}) as client:
        outcome = Outcome(index=0, sent_s=0.0)
        await RouterPool(["http://a"], client).stream(BODY, outcome, 0.0, " ba")
    assert outcome.error.startswith("refused by every router: ConnectError")
    assert outcome.refused_retried == 4 and not outcome.complete
