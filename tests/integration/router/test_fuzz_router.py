"""Property-based fuzzing of the router's HTTP endpoints (issue 10, "Bad input").

The router serves no OpenAPI description, so the inputs come from hypothesis strategies, sent over
real sockets to a router on uvicorn (127.0.0.1) with enginesim processes behind it: one model served
whole, one sliced, and API keys on. Properties: never a 500, every error an OpenAI error body, no
request outlives its timeout, and the router's memory and in-flight accounting come back after
floods of bad input, disconnects and slow clients.

`FLOTILLA_FUZZ_EXAMPLES` (default 300) sets the hypothesis examples per run; `FLOTILLA_FUZZ_REPORT`
names a JSON file to write the case counts to (benchmarks/reliability/README.md has a run's numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flotilla.enginesim.process import free_port

KEY = "sk-fuzz-0b1d2c3e"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT_S = 8.0  # the router's own; the client waits longer, so a hang is ours to see
CLIENT_TIMEOUT_S = 20.0
EXAMPLES = int(os.environ.get("FLOTILLA_FUZZ_EXAMPLES", "300"))
ENDPOINTS = ["/v1/completions", "/v1/chat/completions"]
MODELS = ["whole", "sliced"]


class Fuzzed:
    """A running router and what the fuzzing has tried against it."""

    def __init__(self, router: Any, url: str, client: httpx.AsyncClient) -> None:
        self.router, self.url, self.client = router, url, client
        self.cases: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.notes: dict[str, Any] = {}

    async def send(
        self, case: str, method: str, path: str, content: bytes | None, headers: dict[str, str]
    ) -> int:
        async with asyncio.timeout(CLIENT_TIMEOUT_S + 5):  # a hang fails the test, not the run
            r = await self.client.request(method, self.url + path, content=content, headers=headers)
        self.cases[case] += 1
        self.statuses[f"{case} {r.status_code}"] += 1
        assert r.status_code != 500 and r.status_code < 600, (case, r.status_code, r.text[:300])
        if os.environ.get("FLOTILLA_FUZZ_DEBUG") and r.status_code == 400:
            print(case, content[:200] if content else None, r.text[:200])
        if r.status_code >= 400:
            error = orjson.loads(r.content)["error"]  # an OpenAI error body, whoever wrote it
            assert isinstance(error["message"], str)
        return r.status_code

    def inflight(self) -> int:
        return sum(r.inflight for r in self.router.table.all())


def _add_to_report(path: Path, test: str, fuzzed: Fuzzed) -> None:
    report = json.loads(path.read_text()) if path.exists() else {}
    report[test] = {"cases": fuzzed.cases, "statuses": fuzzed.statuses, "notes": fuzzed.notes}
    path.write_text(json.dumps(report, indent=1, sort_keys=True))


@pytest.fixture
async def fuzzed(engines: Any, serve_router: Any, request: pytest.FixtureRequest) -> AsyncIterator[Fuzzed]:
    procs = await engines(1, "--time-scale", "0.01", "--max-model-len", "4096", model="whole")
    procs += await engines(1, "--time-scale", "0.01", "--max-model-len", "4096", model="sliced")
    from flotilla.router.config import RouterConfig

    config = RouterConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": free_port(),
            "scrape_interval_s": 0.1,
            "seed": 0,
            "max_body_bytes": MAX_BODY,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "max_queue_wait_s": 5,
            "auth": {"mode": "api_keys", "keys": [{"name": "fuzz", "key": KEY}]},
            "static": {
                "instances": [{"url": p.url, "model": p.model} for p in procs],
                "models": {"sliced": {"slice_tokens": 4}},
            },
        }
    )
    async with (
        serve_router(config) as (router, url),
        httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=httpx.Limits(max_connections=64)) as c,
    ):
        fuzzed = Fuzzed(router, url, c)
        yield fuzzed
        report = os.environ.get("FLOTILLA_FUZZ_REPORT")
        if report:
            await asyncio.to_thread(_add_to_report, Path(report), request.node.name, fuzzed)


# ---- strategies ------------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
)
json_value = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5),
    max_leaves=20,
)
token_ids = st.lists(st.integers(min_value=-5, max_value=2**40), max_size=50)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "", "x"]), "content": json_value}
    ),
    max_size=4,
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(MODELS) | json_leaf,
    "prompt": st.text(max_size=300) | token_ids | st.lists(st.text(max_size=20), max_size=3) | json_value,
    "messages": messages | json_value,
    "max_tokens": st.integers(min_value=-(2**66), max_value=2**66) | json_leaf,
    "max_completion_tokens": st.integers(min_value=-10, max_value=10**9) | json_leaf,
    "min_tokens": st.integers(min_value=-10, max_value=10_000) | json_leaf,
    "stream": st.booleans() | json_leaf,
    "stream_options": st.fixed_dictionaries({"include_usage": json_leaf}) | json_value,
    "n": st.integers(min_value=-2, max_value=5) | json_leaf,
    "temperature": st.floats(allow_nan=False, allow_infinity=False) | json_leaf,
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3) | json_leaf,
    "logprobs": json_leaf,
    "seed": json_leaf,
    "echo": json_leaf,
    "return_token_ids": json_leaf,
}


@st.composite
def openai_body(draw: st.DrawFn) -> dict[str, Any]:
    """A body shaped like an OpenAI request: real models and field names, any values (often valid)."""
    if draw(st.booleans()):  # a valid request, with at most one field fuzzed
        body: dict[str, Any] = {
            "model": draw(st.sampled_from(MODELS)),
            "max_tokens": draw(st.integers(min_value=1, max_value=24)),
            "prompt": draw(st.text(max_size=200) | st.lists(st.integers(0, 1000), min_size=1, max_size=50)),
            "messages": [{"role": "user", "content": draw(st.text(max_size=200))}],
            "stream": draw(st.booleans()),
        }
        if draw(st.booleans()):
            body["stream_options"] = {"include_usage": True}
        keys = draw(st.lists(st.sampled_from(sorted(field_values)), max_size=1))
    else:
        body = {}
        keys = draw(st.lists(st.sampled_from(sorted(field_values)), unique=True, max_size=8))
    body |= {k: draw(field_values[k]) for k in keys}
    extra = draw(st.dictionaries(st.text(max_size=12), json_value, max_size=2))
    return extra | body


def _bad_utf8(draw: st.DrawFn) -> bytes:
    lead = draw(st.sampled_from([b"\xff", b"\x80", b"\xc3(", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
    junk = lead + draw(st.binary(max_size=8))  # an invalid lead byte or sequence: never UTF-8
    assert not _is_utf8(b"ab" + junk + b"cd")
    return b'{"model": "whole", "max_tokens": 4, "prompt": "ab' + junk + b'cd"}'


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def case(draw: st.DrawFn) -> tuple[str, str, str, bytes | None, dict[str, str]]:
    kind = draw(
        st.sampled_from(
            ["openai_body", "random_json", "raw_bytes", "invalid_utf8", "truncated_json", "oversize",
             "huge_prompt", "huge_max_tokens", "bad_auth", "other_route"]
        )
    )  # fmt: skip
    path = draw(st.sampled_from(ENDPOINTS))
    headers = dict(AUTH) | {"content-type": "application/json"}
    body: bytes | None
    if kind == "openai_body":
        body = json.dumps(draw(openai_body())).encode()
    elif kind == "random_json":
        body = json.dumps(draw(json_value)).encode()
    elif kind == "raw_bytes":
        body = draw(st.binary(max_size=512))
    elif kind == "invalid_utf8":
        body = _bad_utf8(draw)
    elif kind == "truncated_json":
        whole = json.dumps(draw(openai_body())).encode()
        body = whole[: draw(st.integers(min_value=0, max_value=max(0, len(whole) - 1)))]
    elif kind == "oversize":
        size = draw(st.integers(min_value=MAX_BODY + 1, max_value=4 * MAX_BODY))
        body = b'{"model": "whole", "prompt": "' + b"x" * size + b'"}'
    elif kind == "huge_prompt":  # just under the body limit: the engine must refuse it (context)
        size = draw(st.integers(min_value=MAX_BODY // 2, max_value=MAX_BODY - 200))
        model = draw(st.sampled_from(MODELS))
        as_ids = draw(st.booleans())
        prompt: Any = [7] * (size // 3) if as_ids else "y " * (size // 2)
        body = json.dumps({"model": model, "prompt": prompt, "max_tokens": 8}).encode()[:MAX_BODY]
    elif kind == "huge_max_tokens":
        value = draw(st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64 + 1, 10**30, 4096, 1e300]))
        stream = draw(st.booleans())
        body = json.dumps(
            {"model": draw(st.sampled_from(MODELS)), "prompt": "p", "max_tokens": value, "stream": stream}
        ).encode()
    elif kind == "bad_auth":
        body = json.dumps({"model": "whole", "prompt": "p", "max_tokens": 2}).encode()
        headers["Authorization"] = draw(
            st.sampled_from(["Bearer", "Bearer  sk-", "Basic abc", KEY, f"Bearer {KEY} x", f"Bearer {KEY}x"])
        )
    else:
        path = draw(st.sampled_from([*ENDPOINTS, "/v1/models", "/health", "/metrics", "/", "/v1/x", "/%ff"]))
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
        return kind, method, path, draw(st.binary(max_size=64)), headers
    return kind, "POST", path, body, headers


# ---- properties ------------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("FLOTILLA_FUZZ_RANDOM") is None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(example=case())
async def test_no_input_gets_a_500_or_hangs(
    fuzzed: Fuzzed, example: tuple[str, str, str, bytes | None, dict[str, str]]
) -> None:
    kind, method, path, body, headers = example
    status = await fuzzed.send(kind, method, path, body, headers)
    if kind == "oversize":
        assert status == 413
    if kind in ("raw_bytes", "invalid_utf8", "truncated_json") and method == "POST":
        assert status in (400, 404, 413), status  # 404: a fragment that parses and names no model
    if kind == "bad_auth" and headers["Authorization"] != f"Bearer {KEY}":
        assert status == 401


async def _flood(fuzzed: Fuzzed, n: int, rng: random.Random) -> None:
    """n requests, mostly bad, 16 at a time."""
    sem = asyncio.Semaphore(16)
    bodies = [
        b"{",
        b"\xff\xfe",
        b'{"model": 3}',
        b'{"model": "nope", "prompt": "x"}',
        b'{"model": "whole", "prompt": "x", "max_tokens": 2}',
        b'{"model": "sliced", "prompt": "x", "max_tokens": 9, "stream": true}',
        b'{"model": "whole", "prompt": "x", "max_tokens": 99999999}',
    ]

    async def one(i: int) -> None:
        async with sem:
            body = bodies[i % len(bodies)] + (b" " * rng.randrange(64))
            await fuzzed.send("flood", "POST", rng.choice(ENDPOINTS), body, dict(AUTH))

    await asyncio.gather(*(one(i) for i in range(n)))


async def test_memory_stays_flat_over_rounds_of_bad_input(fuzzed: Fuzzed) -> None:
    """tracemalloc over the whole process (the router runs in it): growth from round 2 to round 4
    of the same load stays small; a per-request leak of even 1 KiB would show as ~1.2 MB."""
    rng = random.Random(1)
    await _flood(fuzzed, 300, rng)  # warm-up: caches, connection pools, metric children
    tracemalloc.start()
    try:
        sizes = []
        for _ in range(3):
            await _flood(fuzzed, 400, rng)
            await asyncio.sleep(0.2)
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    fuzzed.notes["traced_bytes_after_rounds"] = sizes
    assert sizes[-1] - sizes[0] < 1_000_000, sizes
    assert fuzzed.inflight() == 0


async def _wait_idle(fuzzed: Fuzzed, timeout_s: float = 10.0) -> None:
    """Until no request holds an instance slot or waits in a queue (the router's own counters)."""
    for _ in range(int(timeout_s / 0.05)):
        if not fuzzed.inflight() and not any(fuzzed.router.admission.depth(m) for m in MODELS):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still busy after {timeout_s}s: {fuzzed.inflight()} in flight")


async def test_many_concurrent_disconnects_release_everything(fuzzed: Fuzzed) -> None:
    """200 streams and plain requests, each dropped by its client after 0-300 ms: the router
    aborts them all (no lease, queue entry or engine call left behind) and goes on serving."""
    rng = random.Random(2)

    async def dropped(i: int) -> None:
        body = {
            "model": MODELS[i % 2],
            "prompt": "tell me everything",
            "max_tokens": 2000,
            "stream": i % 3 != 0,
        }
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(rng.uniform(0.0, 0.3)):
                async with fuzzed.client.stream(
                    "POST", fuzzed.url + ENDPOINTS[i % 2], json=body, headers=AUTH
                ) as r:
                    async for _ in r.aiter_bytes():
                        pass

    await asyncio.gather(*(dropped(i) for i in range(200)))
    fuzzed.cases["concurrent_disconnects"] += 200
    await _wait_idle(fuzzed)
    ok = {"model": "whole", "prompt": "x", "max_tokens": 3}
    assert (
        await fuzzed.send("after_disconnects", "POST", "/v1/completions", json.dumps(ok).encode(), AUTH)
        == 200
    )


async def test_slow_clients_are_served_and_short_read_timeouts_release(fuzzed: Fuzzed) -> None:
    """A client that reads a stream slowly gets all of it; clients whose read timeout fires before
    the first byte (a long prompt in a queue) leave nothing behind."""
    body = {"model": "sliced", "prompt": "slow", "max_tokens": 40, "stream": True}
    events = 0
    async with fuzzed.client.stream("POST", fuzzed.url + "/v1/completions", json=body, headers=AUTH) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events += 1
                await asyncio.sleep(0.02)  # back-pressure through the router's relay
    assert events > 1
    fuzzed.cases["slow_reader"] += 1

    impatient = httpx.Timeout(5.0, read=0.01)
    async with httpx.AsyncClient(timeout=impatient) as c:
        for i in range(50):
            with contextlib.suppress(httpx.ReadTimeout):
                await c.post(
                    fuzzed.url + ENDPOINTS[i % 2],
                    json={
                        "model": MODELS[i % 2],
                        "prompt": "p " * 500,
                        "max_tokens": 200,
                        "stream": i % 2 == 0,
                    },
                    headers=AUTH,
                )
    fuzzed.cases["read_timeout"] += 50
    await _wait_idle(fuzzed)


async def test_a_client_that_stalls_mid_body(fuzzed: Fuzzed) -> None:
    """A client that declares a body and sends half of it, then closes: the router answers nothing
    and keeps nothing (the request never reached admission)."""
    host, port = fuzzed.url.removeprefix("http://").split(":")
    for _ in range(20):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"model": "whole", '
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    fuzzed.cases["stalled_body_then_close"] += 20
    await _wait_idle(fuzzed)
    ok = {"model": "whole", "prompt": "x", "max_tokens": 3}
    assert await fuzzed.send("after_stalls", "POST", "/v1/completions", json.dumps(ok).encode(), AUTH) == 200
