"""The router in front of real vLLM (CPU): slicing is exact, failover is seamless, metrics are read.

Every comparison is against the same request sent straight to a vLLM pod, unsliced: under greedy
decoding the routed answer (text, token ids, finish reason, usage) must be identical, whatever the
slice length and wherever a slice boundary falls, including inside a multi-byte character. Slice
lengths other than the fleet's (16) are served by routers built in-process over the same pods.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flotilla.chaos.rig import Rig
from flotilla.localcluster.ports import free_port
from flotilla.router.config import RouterConfig
from flotilla.router.scrape import parse_engine_metrics
from flotilla.testing.answers import PATHS, Answer, answer
from flotilla.testing.routers import serve_router

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MODEL = "tiny-e2e"
S = 16  # the fleet's sliceTokens (conftest)


def body(kind: str, k: int, *, max_tokens: int = 40, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": MODEL,
        "temperature": 0,
        "max_tokens": max_tokens,
        "return_token_ids": True,
    }
    if kind == "completion":
        out["prompt"] = f"Question {k * 7919}: what does the licence say about café, naïve and 日本語?"
    else:
        out["messages"] = [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": f"Question {k * 7919}: Größe, Ελληνικά, 漢字?"},
        ]
    return out | extra


def engine_urls(rig: Rig) -> list[str]:
    assert rig.launcher is not None
    return sorted(e.endpoint.url for e in rig.launcher.engines.values())


def static_config(rig: Rig, **routing: Any) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": free_port(),
            "scrape_interval_s": 0.1,
            "seed": 0,
            "static": {
                "instances": [
                    {"url": u, "model": MODEL, "name": f"e{i}"} for i, u in enumerate(engine_urls(rig))
                ],
                "models": {MODEL: routing},
            },
        }
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=120, trust_env=False) as c:
        yield c


async def direct(c: httpx.AsyncClient, rig: Rig, kind: str, req: dict[str, Any], *, stream: bool) -> Answer:
    req = req | {"stream": stream} | ({"stream_options": {"include_usage": True}} if stream else {})
    return answer(kind, await c.post(engine_urls(rig)[0] + PATHS[kind], json=req), stream=stream)


async def routed(c: httpx.AsyncClient, url: str, kind: str, req: dict[str, Any], *, stream: bool) -> Answer:
    req = req | {"stream": stream} | ({"stream_options": {"include_usage": True}} if stream else {})
    return answer(kind, await c.post(url + PATHS[kind], json=req), stream=stream)


def boundary_inside_a_character(reference: Answer, slice_tokens: int) -> bool:
    """Whether a slice of `slice_tokens` ends on a token the engine released no text for: the
    middle of a multi-byte character (an unsliced stream has one event per token)."""
    return any(not p for i, p in enumerate(reference.pieces) if (i + 1) % slice_tokens == 0)


@pytest.mark.parametrize("slice_tokens", [1, 5, S])
@pytest.mark.parametrize("kind", ["completion", "chat"])
async def test_sliced_output_equals_unsliced(
    vllm_rig: Rig, client: httpx.AsyncClient, kind: str, slice_tokens: int
) -> None:
    async def check(url: str) -> None:
        for k in range(3):
            reference = await direct(client, vllm_rig, kind, body(kind, k), stream=True)
            assert reference.finish == "length" and len(reference.ids or ()) == 40
            for stream in (False, True):
                got = await routed(client, url, kind, body(kind, k), stream=stream)
                assert len(got.response_ids) == 1  # one response across all slices
                assert got == reference, (k, stream)
                assert got.usage is not None and got.usage["completion_tokens"] == len(got.ids or ())

    if slice_tokens == S:  # the fleet's own setting, through the router process (Kubernetes discovery)
        await check(vllm_rig.routers[0].url)
    else:
        async with serve_router(static_config(vllm_rig, slice_tokens=slice_tokens)) as (router, url):
            await check(url)
            slices = (
                router.metrics.registry.get_sample_value(
                    "flotilla_router_slices_total", {"model": MODEL, "placement": "stay"}
                )
                or 0.0
            )
            slices += (
                router.metrics.registry.get_sample_value(
                    "flotilla_router_slices_total", {"model": MODEL, "placement": "move"}
                )
                or 0.0
            )
            assert slices >= 6 * (40 // slice_tokens - 1)


@pytest.mark.parametrize("kind", ["completion", "chat"])
async def test_slice_boundary_inside_a_multibyte_character(
    vllm_rig: Rig, client: httpx.AsyncClient, kind: str
) -> None:
    """Each slice length is chosen so that the first slice ends right after a token that carried
    no text of its own (a character split over tokens)."""
    cases = 0
    for k in range(12):
        reference = await direct(client, vllm_rig, kind, body(kind, k, max_tokens=48), stream=True)
        cuts = [i + 1 for i, p in enumerate(reference.pieces[:-1]) if not p and i >= 1]
        if not cuts:
            continue
        cut = cuts[0]
        assert boundary_inside_a_character(reference, cut)
        async with serve_router(static_config(vllm_rig, slice_tokens=cut)) as (_, url):
            for stream in (True, False):
                got = await routed(client, url, kind, body(kind, k, max_tokens=48), stream=stream)
                assert got == reference, (k, cut, stream, got.text, reference.text)
        cases += 1
        if cases >= 3:
            break
    assert cases >= 3, "the tiny model should split characters over tokens (its tokenizer is trained to)"


async def test_slice_boundary_after_a_special_token_inside_a_character(
    vllm_rig: Rig, client: httpx.AsyncClient
) -> None:
    """The slice ends right after a special token that follows half a character (the tiny model
    generates `符` plus a lead byte, then `<unk>`, for prompt 8). `/detokenize` keeps `<unk>`, so
    those ids look whole there, but the stream skips it: a continuation from them would make
    vLLM echo the prompt. The router generates both again and the answer equals the unsliced one."""
    engine = engine_urls(vllm_rig)[0]
    specials: set[int] = set()
    for token in ("<unk>", "<s>", "</s>"):
        r = await client.post(
            engine + "/tokenize", json={"model": MODEL, "prompt": token, "add_special_tokens": False}
        )
        specials |= set(r.json()["tokens"])
    for k in range(12):
        req = body("completion", k, max_tokens=160)
        reference = await direct(client, vllm_rig, "completion", req, stream=True)
        ids = reference.ids or []
        cuts = []
        for j in range(1, len(ids) - 1):
            if ids[j] in specials:
                r = await client.post(engine + "/detokenize", json={"model": MODEL, "tokens": ids[:j]})
                if r.json()["prompt"].endswith("\ufffd"):
                    cuts.append(j + 1)
        if cuts:
            break
    else:
        raise AssertionError("the tiny model should generate a special token inside a character")
    async with serve_router(static_config(vllm_rig, slice_tokens=cuts[0])) as (_, url):
        for stream in (True, False):
            got = await routed(client, url, "completion", req, stream=stream)
            assert got == reference, (k, cuts[0], stream)


@pytest.mark.parametrize("kind", ["completion", "chat"])
async def test_stop_string_straddling_a_slice_boundary(
    vllm_rig: Rig, client: httpx.AsyncClient, kind: str
) -> None:
    url = vllm_rig.routers[0].url
    checked = 0
    for k in range(10):
        reference = await direct(client, vllm_rig, kind, body(kind, k), stream=True)
        before, after = "".join(reference.pieces[:S]), "".join(reference.pieces[S:])
        if len(before) < 2 or len(after) < 2:
            continue
        stop = before[-2:] + after[:2]  # exists only across the boundary after slice 1
        # U+FFFD stands for bytes the random model emitted that are no text: no client stops on it.
        if (before + after).find(stop) != len(before) - 2 or "\ufffd" in stop:
            continue
        checked += 1
        for stream in (True, False):
            req = body(kind, k, stop=[stop, "never-seen-text"])
            want = await direct(client, vllm_rig, kind, req, stream=stream)
            got = await routed(client, url, kind, req, stream=stream)
            assert got.text == (before + after)[: len(before) - 2] == want.text
            assert got.finish == want.finish == "stop" and got.stop_reason == want.stop_reason == stop
            assert got.ids == want.ids
            assert got.usage == want.usage
    assert checked >= 3


async def test_n_logprobs_and_seed_run_whole_and_match(vllm_rig: Rig, client: httpx.AsyncClient) -> None:
    """Requests slicing cannot reproduce are sent whole (documented in router/README.md), so they
    match the engine exactly: `n > 1`, `logprobs`, and a seeded sampled request."""
    url = vllm_rig.routers[0].url
    firsts = await vllm_rig.router_counter("flotilla_router_slices_total", model=MODEL, placement="first")
    # vLLM refuses n > 1 under greedy decoding, so n = 2 samples, seeded to be reproducible.
    for extra in ({"n": 2, "temperature": 1.0, "seed": 3}, {"logprobs": 2}, {"seed": 7, "temperature": 1.0}):
        req = body("completion", 5, max_tokens=24) | extra
        want = (await client.post(engine_urls(vllm_rig)[0] + "/v1/completions", json=req)).json()
        got = (await client.post(url + "/v1/completions", json=req)).json()
        assert "choices" in got, got
        for key in ("choices", "usage"):
            assert got[key] == want[key], extra
    assert len(got["choices"]) == 1 and got["usage"]["completion_tokens"] == 24
    after = await vllm_rig.router_counter("flotilla_router_slices_total", model=MODEL, placement="first")
    assert after == firsts  # none of them was sliced


def _metric(text: str, name: str) -> list[Any]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


async def test_router_reads_vllm_metrics(vllm_rig: Rig, client: httpx.AsyncClient) -> None:
    url = engine_urls(vllm_rig)[0]
    text = (await client.get(url + "/metrics")).text
    info = _metric(text, "vllm:cache_config_info")[0].labels
    sample = parse_engine_metrics(text.encode())
    assert int(info["block_size"]) == 128  # vLLM's CPU backend
    assert sample.kv_capacity_tokens == int(info["block_size"]) * int(info["num_gpu_blocks"])
    assert sample.kv_capacity_tokens == int(info["kv_cache_size_tokens"])
    async with serve_router(static_config(vllm_rig)) as (router, rurl):
        # While a long request runs, the router's scrape sees it running on exactly one engine.
        task = asyncio.create_task(
            routed(client, rurl, "completion", body("completion", 1, max_tokens=400), stream=False)
        )
        seen = 0
        for _ in range(200):
            await asyncio.sleep(0.02)
            samples = [r.sample for r in router.table.all() if r.sample is not None]
            if sum(s.running for s in samples) == 1 and len(samples) == 2:
                seen += 1
            if task.done():
                break
        assert (await task).usage is not None
        assert seen > 0
        for record in router.table.all():
            assert record.sample is not None and record.sample.kv_capacity_tokens == sample.kv_capacity_tokens


async def _hits(c: httpx.AsyncClient, url: str) -> float:
    return float(
        sum(s.value for s in _metric((await c.get(url + "/metrics")).text, "vllm:prefix_cache_hits_total"))
    )


async def test_prefix_cache_hits_from_vllm_counters(vllm_rig: Rig, client: httpx.AsyncClient) -> None:
    """prefix_affinity sends a shared prefix back to the engine that holds it, and a continuation
    slice that stays finds its whole context cached: both read off vLLM's own counters."""
    shared = " ".join(f"clause {i} of the licence text" for i in range(120))  # > 4 blocks of 128 tokens
    urls = engine_urls(vllm_rig)
    async with serve_router(static_config(vllm_rig, policy="prefix_affinity")) as (router, rurl):
        before = {u: await _hits(client, u) for u in urls}
        for k in range(3):
            req = {"model": MODEL, "prompt": shared + f" question {k}", "max_tokens": 4, "temperature": 0}
            assert (await client.post(rurl + "/v1/completions", json=req)).status_code == 200
        gained = {u: await _hits(client, u) - before[u] for u in urls}
        assert max(gained.values()) >= 2 * 512, gained  # requests 2 and 3 reused 4+ blocks each
        assert min(gained.values()) == 0, gained  # all three went to one engine
        await asyncio.sleep(0.3)
        assert (
            sum(r.sample.prefix_hits for r in router.table.all() if r.sample) >= sum(before.values()) + 1024
        )

    async with serve_router(static_config(vllm_rig, slice_tokens=S)) as (router, rurl):
        before = {u: await _hits(client, u) for u in urls}
        req = {"model": MODEL, "prompt": shared, "max_tokens": 4 * S, "temperature": 0}
        got = await routed(client, rurl, "completion", req, stream=False)
        assert got.usage is not None and got.usage["completion_tokens"] == 4 * S
        stays = router.metrics.registry.get_sample_value(
            "flotilla_router_slices_total", {"model": MODEL, "placement": "stay"}
        )
        assert stays == 3
        gained = sum([await _hits(client, u) - before[u] for u in urls])
        prompt_tokens = got.usage["prompt_tokens"]
        assert gained >= 3 * (prompt_tokens // 128) * 128  # every continuation reused the prompt's blocks


async def serving_pod(rig: Rig) -> str:
    """The pod whose engine runs the one request in flight (between two slices it runs on none)."""
    for _ in range(200):
        busy = [pod for pod, n in (await rig.engine_running_requests()).items() if n >= 1]
        assert len(busy) <= 1, busy
        if busy:
            return busy[0]
        await asyncio.sleep(0.005)
    raise AssertionError("no engine runs the request")


async def test_engine_killed_mid_stream_continues_on_another(
    vllm_rig: Rig, client: httpx.AsyncClient
) -> None:
    """SIGKILL the vLLM process group serving a streamed request (a container killed): the client's
    stream continues on the other pod and the whole answer equals the unfaulted one. Runs last: the
    killed engine stays down (restarting it, a minute of vLLM start, is the rig's job, which the
    chaos suite checks)."""
    req = body("completion", 8, max_tokens=600)
    reference = await direct(client, vllm_rig, "completion", req, stream=True)
    failovers = await vllm_rig.router_counter(
        "flotilla_router_slices_total", model=MODEL, placement="failover"
    )
    raw = b""
    killed: str | None = None
    payload = req | {"stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", vllm_rig.routers[0].url + "/v1/completions", json=payload) as resp:
        async for chunk in resp.aiter_bytes():
            raw += chunk
            if killed is None and raw.count(b"token_ids") >= 3 * S:
                killed = await serving_pod(vllm_rig)
                vllm_rig.no_restart.add(vllm_rig.engine_key(killed))
                os.killpg(vllm_rig.engine_of(killed).pid, signal.SIGKILL)
    got = answer("completion", httpx.Response(200, content=raw), stream=True)
    assert killed is not None
    assert got == reference  # same text, ids, usage and finish: the cut was invisible
    after = await vllm_rig.router_counter("flotilla_router_slices_total", model=MODEL, placement="failover")
    assert after == failovers + 1
