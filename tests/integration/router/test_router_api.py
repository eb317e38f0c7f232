"""The router in front of real engine processes: streaming, errors, the openai client."""

import asyncio
from typing import Any

import httpx
import openai
import orjson
import pytest

MODEL = "sim"


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


async def test_streaming_and_plain_answers_match_the_engine_exactly(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(2, "--time-scale", "0.05", "--mean-output-tokens", "20")
    async with serve_router(router_config(procs)) as (_, url), httpx.AsyncClient(timeout=30) as c:
        for path, body in [
            ("/v1/completions", {"prompt": "tell me a story", "max_tokens": 60}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 60}),
        ]:
            body |= {
                "model": MODEL,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
                "return_token_ids": True,
                "some_unknown_field": {"passes": "through"},
            }
            direct = await c.post(procs[0].url + path, json=body)
            routed = await c.post(url + path, json=body)
            assert routed.status_code == 200 and routed.headers["content-type"].startswith(
                "text/event-stream"
            )
            d, r = sse_events(direct.text), sse_events(routed.text)
            assert r[-1] == "[DONE]" and len(d) == len(r)
            strip = lambda e: {k: v for k, v in orjson.loads(e).items() if k not in ("id", "created")}  # noqa: E731
            assert [strip(e) for e in r[:-1]] == [strip(e) for e in d[:-1]]
            last = orjson.loads(r[-2])
            assert last["choices"] == [] and last["usage"]["completion_tokens"] >= 1
            finishes = [orjson.loads(e)["choices"][0]["finish_reason"] for e in r[:-2]]
            assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])
            plain = await c.post(url + path, json=body | {"stream": False})
            assert plain.status_code == 200 and plain.headers["x-request-id"]
            assert plain.json()["usage"] == last["usage"]


async def test_openai_client_unmodified(engines: Any, router_config: Any, serve_router: Any) -> None:
    procs = await engines(2, "--time-scale", "0.05")
    async with serve_router(router_config(procs)) as (_, url):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        assert [m.id for m in (await client.models.list()).data] == [MODEL]
        out = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            extra_body={"ignore_eos": True},
        )
        assert out.choices[0].finish_reason == "length" and out.usage and out.usage.completion_tokens == 5
        stream = await client.completions.create(
            model=MODEL,
            prompt="abc",
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = [c async for c in stream]
        assert chunks[-1].usage and chunks[-1].usage.completion_tokens == 4
        assert "".join(c.choices[0].text for c in chunks if c.choices)
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model="missing", prompt="x")
        with pytest.raises(openai.BadRequestError):
            await client.completions.create(model=MODEL, prompt="x", max_tokens=10**7)  # the engine's 400
        await client.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"nonsense",
        b"[]",
        b'{"model": 1}',
        b'{"model":"sim","stream":"x"}',
        b'{"model":"sim","prompt":{}}',
        b'{"model":"sim","messages":"no"}',
        b"\xff\xfe",
        b'{"model":"sim","prompt":"x","max_tokens":-1}',
    ],
)
async def test_bad_input_is_4xx_never_500(
    engines: Any, router_config: Any, serve_router: Any, payload: bytes
) -> None:
    procs = await engines(1, "--time-scale", "0")
    async with serve_router(router_config(procs, max_body_bytes=4096)) as (_, url), httpx.AsyncClient() as c:
        for path in ("/v1/completions", "/v1/chat/completions"):
            r = await c.post(url + path, content=payload)
            assert 400 <= r.status_code < 500, (path, payload, r.text)
            assert r.json()["error"]["code"] == r.status_code
        big = await c.post(
            url + "/v1/completions", content=b'{"model":"sim","prompt":"' + b"x" * 5000 + b'"}'
        )
        assert big.status_code == 413


async def test_overload_is_429_with_retry_after(engines: Any, router_config: Any, serve_router: Any) -> None:
    procs = await engines(1, "--time-scale", "1", "--decode-step-ms", "20")
    cfg = router_config(procs, max_inflight_per_instance=2, max_queue_per_model=3)
    async with serve_router(cfg) as (router, url), httpx.AsyncClient(timeout=30) as c:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 50, "ignore_eos": True}  # ~1 s each
        results = await asyncio.gather(*(c.post(url + "/v1/completions", json=body) for _ in range(12)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) == 5, codes  # 2 in flight + 3 queued
        assert codes.count(429) == 7
        rejected = next(r for r in results if r.status_code == 429)
        assert (
            int(rejected.headers["retry-after"]) >= 1 and rejected.json()["error"]["type"] == "RateLimitError"
        )
        metrics = (await c.get(url + "/metrics")).text
        assert 'flotilla_router_requests_total{model="sim",status="429"} 7.0' in metrics
        assert router.admission.depth(MODEL) == 0


async def test_request_timeout_is_504(engines: Any, router_config: Any, serve_router: Any) -> None:
    procs = await engines(1, "--time-scale", "1", "--decode-step-ms", "50")
    async with (
        serve_router(router_config(procs, request_timeout_s=0.3)) as (_, url),
        httpx.AsyncClient() as c,
    ):
        r = await c.post(
            url + "/v1/completions",
            json={"model": MODEL, "prompt": "x", "max_tokens": 100, "ignore_eos": True},
        )
        assert r.status_code == 504


async def test_client_disconnect_cancels_the_engine_request(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(1, "--time-scale", "1", "--decode-step-ms", "10")
    async with serve_router(router_config(procs)) as (router, url), httpx.AsyncClient(timeout=10) as c:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 5000, "ignore_eos": True, "stream": True}
        async with c.stream("POST", url + "/v1/completions", json=body) as resp:
            got = 0
            async for _ in resp.aiter_lines():
                got += 1
                if got > 5:
                    break
        plain = asyncio.create_task(c.post(url + "/v1/completions", json=body | {"stream": False}))
        await asyncio.sleep(0.3)
        plain.cancel()
        for _ in range(100):
            m = (await c.get(procs[0].url + "/metrics")).text
            running = next(line for line in m.splitlines() if line.startswith("vllm:num_requests_running"))
            if float(running.split()[-1]) == 0 and router.table.all()[0].inflight == 0:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"engine still running the abandoned requests: {running}")
