"""The enginesim as a real process on loopback: vLLM's API, streaming, continuation, metrics."""

from collections.abc import AsyncIterator

import httpx
import openai
import orjson
import pytest

from flotilla.enginesim.process import EngineProcess, start_engine

MODEL = "sim-model"


@pytest.fixture
async def engine() -> AsyncIterator[EngineProcess]:
    proc = await start_engine(
        model=MODEL, args=["--time-scale", "0.1", "--mean-output-tokens", "30", "--block-size", "4"]
    )
    try:
        yield proc
    finally:
        await proc.stop()


async def sse(client: httpx.AsyncClient, path: str, body: dict[str, object]) -> list[dict[str, object]]:
    chunks: list[dict[str, object]] = []
    async with client.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in resp.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert line.startswith("data: ")
        chunks.append(orjson.loads(line[6:]))
    return chunks


async def test_greedy_continuation_from_returned_ids_equals_unsliced(engine: EngineProcess) -> None:
    async with httpx.AsyncClient(base_url=engine.url, timeout=30) as c:
        body = {
            "model": MODEL,
            "prompt": "once upon a time",
            "max_tokens": 40,
            "temperature": 0,
            "ignore_eos": True,
            "return_token_ids": True,
        }
        full = (await c.post("/v1/completions", json=body)).json()["choices"][0]
        assert len(full["token_ids"]) == 40
        first = (await c.post("/v1/completions", json=body | {"max_tokens": 15})).json()["choices"][0]
        assert first["finish_reason"] == "length"
        assert first["token_ids"] == full["token_ids"][:15]
        rest = (
            await c.post(
                "/v1/completions",
                json=body | {"prompt": first["prompt_token_ids"] + first["token_ids"], "max_tokens": 25},
            )
        ).json()["choices"][0]
        assert first["token_ids"] + rest["token_ids"] == full["token_ids"]
        assert first["text"] + rest["text"] == full["text"]


async def test_chat_stream_chunks_usage_and_token_ids(engine: EngineProcess) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi there"}],
        "max_tokens": 200,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    async with httpx.AsyncClient(base_url=engine.url, timeout=30) as c:
        chunks = await sse(c, "/v1/chat/completions", body)
        whole = (await c.post("/v1/chat/completions", json=body | {"stream": False})).json()
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # type: ignore[index]
    assert chunks[0]["prompt_token_ids"] == whole["prompt_token_ids"]
    assert len({c["id"] for c in chunks}) == 1
    content = [c for c in chunks if c["choices"]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in content)  # type: ignore[index]
    ids = [t for c in content for t in c["choices"][0].get("token_ids", [])]  # type: ignore[index]
    finishes = [c["choices"][0]["finish_reason"] for c in content]  # type: ignore[index]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1]), "short mean length: EOS ends it"
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage == whole["usage"]
    assert usage["completion_tokens"] == len(ids)  # type: ignore[index]
    assert text == whole["choices"][0]["message"]["content"]
    assert ids == whole["choices"][0]["token_ids"]


async def test_openai_client_and_errors(engine: EngineProcess) -> None:
    client = openai.AsyncOpenAI(base_url=f"{engine.url}/v1", api_key="unused", max_retries=0)
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    out = await client.completions.create(
        model=MODEL, prompt=[1, 2, 3], max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    assert out.usage is not None and out.usage.completion_tokens == 5
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        max_tokens=3,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    parts = [chunk async for chunk in stream]
    assert parts[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.NotFoundError):
        await client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError):
        await client.completions.create(model=MODEL, prompt="x", max_tokens=10**6)
    async with httpx.AsyncClient(base_url=engine.url) as c:
        bad = await c.post("/v1/completions", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == 400
        assert (await c.post("/v1/completions", json={"model": MODEL, "prompt": [10**9]})).status_code == 400
    await client.close()


async def test_metrics_use_vllm_names(engine: EngineProcess) -> None:
    async with httpx.AsyncClient(base_url=engine.url) as c:
        await c.post("/v1/completions", json={"model": MODEL, "prompt": "abcdefgh" * 4, "max_tokens": 2})
        await c.post("/v1/completions", json={"model": MODEL, "prompt": "abcdefgh" * 4, "max_tokens": 2})
        text = (await c.get("/metrics")).text
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:time_to_first_token_seconds_bucket",
    ):
        assert f"\n{name}{{" in text
    assert 'vllm:cache_config_info{block_size="4"' in text
    hits = next(line for line in text.splitlines() if line.startswith("vllm:prefix_cache_hits_total"))
    assert float(hits.split()[-1]) == 28.0  # 31 of 32 prompt tokens may hit: 7 blocks of 4
