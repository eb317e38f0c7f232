"""The chaos load checks every answer against `ExpectedText`: it must be exactly what a real
`flotilla.enginesim` process streams for a greedy, `ignore_eos` request."""

from __future__ import annotations

import httpx
import orjson

from flotilla.chaos.workload import ExpectedText
from flotilla.enginesim.process import start_engine
from flotilla.localcluster.demo_trace import PromptBuilder, TraceRequest


async def test_expected_text_is_what_the_engine_streams() -> None:
    engine = await start_engine(model="m", args=["--time-scale", "0"])
    try:
        builder, expected = PromptBuilder(), ExpectedText()
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            for hash_ids, tokens in (((1, 2), 40), ((7,), 3), ((3, 4, 5), 97)):
                prompt = builder.prompt(TraceRequest(0.0, "m", 300, tokens, hash_ids))
                body = {
                    "model": "m", "prompt": prompt, "max_tokens": tokens,
                    "temperature": 0, "ignore_eos": True, "stream": True,
                }  # fmt: skip
                text = []
                async with client.stream("POST", engine.url + "/v1/completions", json=body) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            text.append(orjson.loads(line[6:])["choices"][0]["text"])
                assert "".join(text) == expected(prompt, tokens)
    finally:
        await engine.stop()
