"""The enginesim's HTTP layer in-process (ASGI), with steps that take no time."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from flotilla.enginesim.app import EngineSimSettings, FlagTiming, build_server
from flotilla.enginesim.server import EngineServer

MODEL = "m"


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, EngineServer]]:
    settings = EngineSimSettings(model=MODEL, timing=FlagTiming(), time_scale=0, mean_output_tokens=20)
    server = build_server(settings)
    loop = asyncio.create_task(server.engine.run())
    transport = httpx.ASGITransport(app=server.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as c:
        yield c, server
    loop.cancel()


async def test_n_and_batched_prompts_give_one_choice_each(
    client: tuple[httpx.AsyncClient, EngineServer],
) -> None:
    c, _ = client
    body = {
        "model": MODEL,
        "prompt": ["a b c", "d e f"],
        "n": 2,
        "max_tokens": 5,
        "ignore_eos": True,
        "temperature": 0,
    }
    out = (await c.post("/v1/completions", json=body)).json()
    assert [ch["index"] for ch in out["choices"]] == [0, 1, 2, 3]
    assert out["choices"][0]["text"] == out["choices"][1]["text"], "greedy: the same prompt twice, same text"
    assert out["choices"][0]["text"] != out["choices"][2]["text"]
    assert out["usage"]["completion_tokens"] == 20
    assert out["usage"]["prompt_tokens"] == 10  # each prompt counted once, not per choice


async def test_seeded_sampling_is_reproducible(client: tuple[httpx.AsyncClient, EngineServer]) -> None:
    c, _ = client
    body = {
        "model": MODEL,
        "prompt": "x",
        "max_tokens": 30,
        "ignore_eos": True,
        "temperature": 1.0,
        "seed": 7,
        "return_token_ids": True,
    }
    a = (await c.post("/v1/completions", json=body)).json()["choices"][0]["token_ids"]
    b = (await c.post("/v1/completions", json=body)).json()["choices"][0]["token_ids"]
    greedy = (await c.post("/v1/completions", json=body | {"temperature": 0})).json()["choices"][0][
        "token_ids"
    ]
    assert a == b and a != greedy


async def test_stop_string_in_a_stream_is_held_back_and_cut(
    client: tuple[httpx.AsyncClient, EngineServer],
) -> None:
    c, _ = client
    base = {"model": MODEL, "prompt": "q", "max_tokens": 12, "ignore_eos": True, "temperature": 0}
    text = (await c.post("/v1/completions", json=base)).json()["choices"][0]["text"]
    stop = text[5:9]
    resp = await c.post("/v1/completions", json=base | {"stop": [stop], "stream": True})
    events = [orjson.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    streamed = "".join(e["choices"][0]["text"] for e in events)
    assert streamed == text[: text.find(stop)]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"][0]["stop_reason"] == stop
    assert all(stop not in e["choices"][0]["text"] for e in events)


async def test_stop_token_ids_and_min_tokens(client: tuple[httpx.AsyncClient, EngineServer]) -> None:
    c, _ = client
    base = {
        "model": MODEL,
        "prompt": "q",
        "max_tokens": 12,
        "ignore_eos": True,
        "temperature": 0,
        "return_token_ids": True,
    }
    ids = (await c.post("/v1/completions", json=base)).json()["choices"][0]["token_ids"]
    out = (await c.post("/v1/completions", json=base | {"stop_token_ids": [ids[3]]})).json()["choices"][0]
    assert out["token_ids"] == ids[: ids.index(ids[3]) + 1] and out["stop_reason"] == ids[3]
    long = (
        await c.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": "q", "min_tokens": 200, "max_tokens": 200, "temperature": 0},
        )
    ).json()
    assert long["usage"]["completion_tokens"] == 200, "EOS is suppressed until min_tokens"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": MODEL, "prompt": "x", "logprobs": 1}, 400),
        ({"model": MODEL, "prompt": "x", "temperature": -1}, 400),
        ({"model": MODEL, "prompt": []}, 400),
        ({"model": MODEL, "prompt": "x", "stop": [""]}, 400),
        ({"model": MODEL, "messages": []}, 400),
        ({"model": "other", "prompt": "x"}, 404),
    ],
)
async def test_bad_requests(
    client: tuple[httpx.AsyncClient, EngineServer], body: dict[str, object], status: int
) -> None:
    c, _ = client
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    r = await c.post(path, json=body)
    assert r.status_code == status and r.json()["error"]["code"] == status


async def test_errors_are_openai_error_objects(client: tuple[httpx.AsyncClient, EngineServer]) -> None:
    c, _ = client
    missing = await c.post("/v1/completions", json={"model": "other", "prompt": "x"})
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == {
        "error": {
            "message": "The model `other` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }
    huge = await c.post("/v1/completions", headers={"content-length": str(64 * 1024 * 1024)}, content=b"{}")
    assert huge.status_code == 413
    assert huge.json()["error"]["type"] == "RequestTooLargeError"


async def test_detokenize_returns_the_text_of_token_ids(
    client: tuple[httpx.AsyncClient, EngineServer],
) -> None:
    c, server = client
    ids = server.engine.tokenizer.encode("hello wörld")
    out = await c.post("/detokenize", json={"model": MODEL, "tokens": ids})
    assert out.status_code == 200 and out.json() == {"prompt": "hello wörld"}
    cut = ids[: ids.index(195) + 1]  # "ö" is two byte tokens: cut after the first of them
    assert (await c.post("/detokenize", json={"model": MODEL, "tokens": cut})).json() == {
        "prompt": "hello w\ufffd"
    }
    bad = await c.post("/detokenize", json={"model": MODEL, "tokens": ["x"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
