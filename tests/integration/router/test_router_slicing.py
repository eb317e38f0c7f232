"""Slice-level scheduling on real enginesim processes: exact continuation, stops, usage, failover,
rebalancing between slices."""

import asyncio
from typing import Any

import httpx
import orjson
import pytest

MODEL = "sim"
S = 7


def sse(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") and line[6:] != "[DONE]":
            out.append(orjson.loads(line[6:]))
    assert text.rstrip().endswith("data: [DONE]")
    return out


def summarize(kind: str, resp: httpx.Response, stream: bool) -> dict[str, Any]:
    """What must be equal sliced and unsliced: text, finish, usage, token ids, one id."""
    assert resp.status_code == 200, resp.text
    if not stream:
        body = resp.json()
        c = body["choices"][0]
        text = c["text"] if kind == "completion" else c["message"]["content"]
        return {
            "text": text,
            "finish": c["finish_reason"],
            "stop_reason": c.get("stop_reason"),
            "usage": body["usage"],
            "ids": c.get("token_ids"),
            "ids_seen": {body["id"]},
        }
    events = sse(resp.text)
    text, ids, finish, stop_reason, usage, seen = "", [], None, None, None, set()
    for ev in events:
        seen.add(ev["id"])
        if ev.get("usage"):
            usage = ev["usage"]
        for c in ev["choices"]:
            text += c["text"] if kind == "completion" else (c["delta"].get("content") or "")
            ids += c.get("token_ids") or []
            if c.get("finish_reason"):
                assert finish is None, "one finish_reason only"
                finish, stop_reason = c["finish_reason"], c.get("stop_reason")
    return {
        "text": text,
        "finish": finish,
        "stop_reason": stop_reason,
        "usage": usage,
        "ids": ids,
        "ids_seen": seen,
    }


def sliced_config(router_config: Any, procs: Any, slice_tokens: int = S, **extra: Any) -> Any:
    return router_config(
        procs,
        static={
            "instances": [{"url": p.url, "model": MODEL, "name": f"e{i}"} for i, p in enumerate(procs)],
            "models": {MODEL: {"slice_tokens": slice_tokens, **extra}},
        },
    )


def slices(router: Any, placement: str) -> float:
    return (
        router.metrics.registry.get_sample_value(
            "flotilla_router_slices_total", {"model": MODEL, "placement": placement}
        )
        or 0.0
    )


PATHS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}


def request(kind: str, k: int, max_tokens: int = 60) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "temperature": 0,
        "max_tokens": max_tokens,
        "return_token_ids": True,
    }
    if kind == "completion":
        body["prompt"] = f"tell me something, number {k * 7919}"
    else:
        body["messages"] = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"a question, number {k * 7919}"},
        ]
    return body


@pytest.mark.parametrize("kind", ["completion", "chat"])
async def test_sliced_output_equals_unsliced(
    kind: str, engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(2, "--time-scale", "0", "--mean-output-tokens", "40")
    async with (
        serve_router(sliced_config(router_config, procs)) as (router, url),
        httpx.AsyncClient(timeout=30) as c,
    ):
        finishes = set()
        for k in range(10):
            for stream in (False, True):
                body = request(kind, k, max_tokens=30 if k % 2 else 60) | {"stream": stream}
                if stream:
                    body["stream_options"] = {"include_usage": True}
                direct = summarize(kind, await c.post(procs[k % 2].url + PATHS[kind], json=body), stream)
                routed = summarize(kind, await c.post(url + PATHS[kind], json=body), stream)
                assert len(routed.pop("ids_seen")) == 1  # one response id across all slices
                direct.pop("ids_seen")
                assert routed == direct, (k, stream)
                assert routed["usage"]["completion_tokens"] == len(routed["ids"])
                finishes.add((routed["finish"], routed["usage"]["completion_tokens"] > S))
        # Both endings exercised, after continuations: an EOS in a later slice, and the limit.
        assert {("stop", True), ("length", True)} <= finishes, finishes
        assert slices(router, "stay") + slices(router, "move") > 20


@pytest.mark.parametrize("kind", ["completion", "chat"])
async def test_stop_string_straddling_a_slice_boundary(
    kind: str, engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(1, "--time-scale", "0", "--mean-output-tokens", "1000")
    async with (
        serve_router(sliced_config(router_config, procs)) as (router, url),
        httpx.AsyncClient(timeout=30) as c,
    ):
        checked = 0
        for k in range(10):
            body = request(kind, k, max_tokens=40) | {"stream": True}
            events = sse((await c.post(procs[0].url + PATHS[kind], json=body)).text)
            pieces = [
                (ch.get("text") if kind == "completion" else ch["delta"].get("content")) or ""
                for ev in events
                for ch in ev["choices"]
                if ch.get("token_ids")
            ]
            before, after = "".join(pieces[:S]), "".join(pieces[S:])
            if len(before) < 2 or len(after) < 2:
                continue
            stop = before[-2:] + after[:2]  # exists only across the boundary after slice 1
            full = before + after
            if full.find(stop) != len(before) - 2:
                continue
            checked += 1
            for stream in (True, False):
                want_body = body | {"stop": [stop, "never-seen-text"], "stream": stream}
                direct = summarize(kind, await c.post(procs[0].url + PATHS[kind], json=want_body), stream)
                routed = summarize(kind, await c.post(url + PATHS[kind], json=want_body), stream)
                assert routed["text"] == full[: len(before) - 2] == direct["text"]
                assert routed["finish"] == "stop" and routed["stop_reason"] == stop
                assert routed["ids"] == direct["ids"]
                if not stream:
                    assert routed["usage"] == direct["usage"]
        assert checked >= 3
        assert slices(router, "stay") >= checked * 2  # every stopped request went past slice 1


async def test_seed_n_logprobs_disable_slicing(engines: Any, router_config: Any, serve_router: Any) -> None:
    procs = await engines(1, "--time-scale", "0", "--mean-output-tokens", "1000")
    async with (
        serve_router(sliced_config(router_config, procs)) as (router, url),
        httpx.AsyncClient(timeout=30) as c,
    ):
        for extra in ({"seed": 5, "temperature": 1.0}, {"n": 2}):
            body = request("completion", 1) | extra
            r = await c.post(url + "/v1/completions", json=body)
            assert r.status_code == 200
            assert r.json()["usage"]["completion_tokens"] == 60 * body.get("n", 1)
        r = await c.post(url + "/v1/completions", json=request("completion", 1) | {"logprobs": 1})
        assert r.status_code == 400  # passed through whole: the engine's own answer (enginesim refuses)
        assert slices(router, "first") == 0
        r = await c.post(url + "/v1/completions", json=request("completion", 1))
        assert r.json()["usage"]["completion_tokens"] == 60
        assert slices(router, "first") == 1 and slices(router, "stay") == 60 // S  # 9 continuations


async def test_engine_killed_mid_stream_resumes_elsewhere(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(2, "--time-scale", "1", "--decode-step-ms", "15", "--mean-output-tokens", "100000")
    config = sliced_config(router_config, procs, slice_tokens=10)
    async with serve_router(config) as (router, url), httpx.AsyncClient(timeout=60) as c:
        body = request("completion", 3, max_tokens=80) | {
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        expected = summarize("completion", await c.post(procs[1].url + "/v1/completions", json=body), True)
        raw = b""
        killed = None
        async with c.stream("POST", url + "/v1/completions", json=body) as resp:
            async for chunk in resp.aiter_bytes():
                raw += chunk
                if killed is None and raw.count(b"token_ids") >= 25:
                    busy = [r for r in router.table.all() if r.inflight]
                    assert len(busy) == 1
                    killed = busy[0].id
                    procs[int(killed[1:])].kill()
        routed = summarize("completion", httpx.Response(200, content=raw), True)
        routed.pop("ids_seen")
        expected.pop("ids_seen")
        assert killed is not None
        assert routed == expected  # intact: same text and ids, usage 80, finish length
        assert slices(router, "failover") == 1
        assert router.table.get(killed).ejected  # type: ignore[union-attr]


async def test_rebalances_between_slices_under_skewed_load(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(2, "--time-scale", "1", "--decode-step-ms", "4", "--mean-output-tokens", "100000")
    config = sliced_config(router_config, procs, slice_tokens=8)
    async with serve_router(config) as (router, url), httpx.AsyncClient(timeout=60) as c:
        body = request("completion", 9, max_tokens=120)
        expected = (await c.post(procs[0].url + "/v1/completions", json=body)).json()
        task = asyncio.create_task(c.post(url + "/v1/completions", json=body))
        for _ in range(200):
            busy = [r for r in router.table.all() if r.inflight]
            if busy:
                break
            await asyncio.sleep(0.005)
        hot = procs[int(busy[0].id[1:])]
        # Skew: 30 long requests land on the instance the sliced request started on, behind the
        # router's back; the scrape shows them.
        flood = [
            asyncio.create_task(c.post(hot.url + "/v1/completions", json=request("completion", 100 + i, 400)))
            for i in range(30)
        ]
        routed = (await task).json()
        for f in flood:
            f.cancel()
        await asyncio.gather(*flood, return_exceptions=True)
        assert routed["choices"][0]["token_ids"] == expected["choices"][0]["token_ids"]
        assert routed["usage"] == expected["usage"]
        assert slices(router, "move") >= 1
        # Once moved it stays: the flood never reaches the other instance.
        assert slices(router, "move") <= 2 and slices(router, "stay") >= 10


async def test_balanced_load_stays_put(engines: Any, router_config: Any, serve_router: Any) -> None:
    procs = await engines(2, "--time-scale", "0", "--mean-output-tokens", "100000")
    async with (
        serve_router(sliced_config(router_config, procs)) as (router, url),
        httpx.AsyncClient(timeout=30) as c,
    ):
        await asyncio.gather(
            *(c.post(url + "/v1/completions", json=request("completion", k, 35)) for k in range(4))
        )
        assert slices(router, "first") == 4 and slices(router, "stay") == 16 and slices(router, "move") == 0


async def test_last_engine_lost_mid_stream_ends_with_an_error_event(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(1, "--time-scale", "1", "--decode-step-ms", "15", "--mean-output-tokens", "100000")
    async with (
        serve_router(sliced_config(router_config, procs, slice_tokens=10)) as (router, url),
        httpx.AsyncClient(timeout=60) as c,
    ):
        body = request("completion", 3, max_tokens=80) | {"stream": True}
        raw = b""
        async with c.stream("POST", url + "/v1/completions", json=body) as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_bytes():
                raw += chunk
                if raw.count(b"token_ids") >= 15 and procs[0].proc.returncode is None:
                    procs[0].kill()
        events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
        last = orjson.loads(events[-1])
        assert "error" in last and last["error"]["code"] in (502, 503)
        assert all(r.inflight == 0 for r in router.table.all())
