"""Router replicas sharing their routing state through a real NATS server, in front of real engine
processes: a burst spread over three replicas stays balanced, a key's token rate holds across them,
and killing NATS mid-load loses no request (the replicas fall back to their own view and recover)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from flotilla.localcluster.nats import NatsServer, nats_binary, nats_server
from flotilla.router.app import Router

MODEL = "sim"
REPLICAS = 3


@contextlib.asynccontextmanager
async def replicas(
    serve_router: Any, router_config: Any, procs: Any, nats: NatsServer, **overrides: Any
) -> AsyncIterator[list[tuple[Router, str]]]:
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for k in range(REPLICAS):
            peers = {"url": nats.url, "replica": f"r{k}", "heartbeat_s": 0.2, "expire_s": 1.0}
            cfg = router_config(procs, seed=k, peers=peers, **overrides)
            out.append(await stack.enter_async_context(serve_router(cfg)))
        await until(lambda: all(len(r.peers.peers.peers()) == REPLICAS - 1 for r, _ in out if r.peers))
        yield out


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def per_instance_inflight(routers: list[tuple[Router, str]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for router, _ in routers:
        for record in router.table.all():
            totals[record.id] = totals.get(record.id, 0) + record.inflight
    return totals


async def test_a_burst_over_three_replicas_stays_balanced(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(4, "--time-scale", "1", "--decode-step-ms", "20")
    async with nats_server() as nats, replicas(serve_router, router_config, procs, nats) as routers:
        ratios: list[float] = []
        misses: list[int] = []  # how far replica 0's view of all replicas' requests is from the truth
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                truth = per_instance_inflight(routers)
                counts = list(truth.values())
                if sum(counts) >= 40:  # the burst is on the engines
                    ratios.append(max(counts) / (sum(counts) / len(counts)))
                    seen = {r.id: r.inflight + r.peer.inflight for r in routers[0][0].table.all()}
                    misses.append(sum(abs(seen[i] - n) for i, n in truth.items()))
                await asyncio.sleep(0.02)

        rng = random.Random(1)
        sampler = asyncio.create_task(sample())
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=300)) as c:
            bodies = [
                {"model": MODEL, "prompt": "w " * rng.randint(1, 400), "max_tokens": rng.randint(10, 80)}
                for _ in range(200)
            ]
            sends = [
                c.post(routers[k % REPLICAS][1] + "/v1/completions", json={**b, "ignore_eos": True})
                for k, b in enumerate(bodies)
            ]
            answers = await asyncio.gather(*sends)
        stop.set()
        await sampler
    assert all(a.status_code == 200 for a in answers)
    assert ratios, "never sampled the burst in flight"
    ratios.sort()
    assert ratios[int(0.9 * (len(ratios) - 1))] <= 1.25, ratios
    misses.sort()
    # Sampled between event-loop turns: the peers' dispatches of the last few milliseconds may be
    # on their way; most samples see every replica's requests exactly.
    assert misses[len(misses) // 2] <= 2, misses


async def test_a_keys_token_rate_holds_across_replicas(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(2, "--time-scale", "0")
    per_minute = 3000  # each request below is charged 1 prompt token + 99: 30 requests a minute
    auth = {"mode": "api_keys", "keys": [{"name": "team", "key": "sk-team", "tokens_per_minute": per_minute}]}
    async with (
        nats_server() as nats,
        replicas(serve_router, router_config, procs, nats, auth=auth) as routers,
    ):
        statuses = []
        async with httpx.AsyncClient(timeout=30, headers={"authorization": "Bearer sk-team"}) as c:
            for k in range(90):  # three times the limit, dealt over the replicas
                body = {"model": MODEL, "prompt": [7], "max_tokens": 99, "ignore_eos": True}
                r = await c.post(routers[k % REPLICAS][1] + "/v1/completions", json=body)
                statuses.append(r.status_code)
                await asyncio.sleep(0.01)
    ok = statuses.count(200)
    # The limit plus the refill during the ~2 s of the test (50 tokens/s): about R, not 3R.
    assert 30 <= ok <= 33, statuses
    assert statuses.count(429) == 90 - ok


async def test_killing_nats_mid_load_loses_nothing_and_the_replicas_recover(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(2, "--time-scale", "1", "--decode-step-ms", "10")
    async with nats_server() as nats, replicas(serve_router, router_config, procs, nats) as routers:
        port = nats.port
        async with httpx.AsyncClient(timeout=60) as c:

            async def send(k: int) -> int:
                await asyncio.sleep(k * 0.02)
                body = {"model": MODEL, "prompt": "x", "max_tokens": 20, "ignore_eos": True}
                r = await c.post(routers[k % REPLICAS][1] + "/v1/completions", json=body)
                return r.status_code

            load = asyncio.gather(*(send(k) for k in range(100)))  # 2 s of arrivals
            await asyncio.sleep(0.5)
            await nats.kill()
            await until(lambda: not any(r.peers.up for r, _ in routers if r.peers))
            assert all(not r.peers.peers.peers() for r, _ in routers if r.peers), "fell back to own state"
            assert sum(per_instance_inflight(routers).values()) > 0, "killed while under load"
            statuses = await load
            assert statuses == [200] * 100
            await nats.start()  # the same address, as a restarted pod behind its Service
            assert nats.port == port
            await until(
                lambda: all(r.peers.up and len(r.peers.peers.peers()) == 2 for r, _ in routers if r.peers)
            )
            again = await asyncio.gather(*(send(k) for k in range(30)))
            assert again == [200] * 30
            metrics = (await c.get(routers[0][1] + "/metrics")).text
            assert "flotilla_router_peer_link_up 1.0" in metrics
            assert "flotilla_router_peer_staleness_seconds_count" in metrics


async def test_a_replica_started_before_nats_serves_alone_then_joins(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(1, "--time-scale", "0")
    nats = NatsServer(nats_binary())  # its port is chosen, nothing listens yet
    peers = {"url": nats.url, "heartbeat_s": 0.2, "reconnect_wait_s": 0.2}
    try:
        async with (
            serve_router(router_config(procs, peers={**peers, "replica": "a"})) as (a, url),
            serve_router(router_config(procs, seed=1, peers={**peers, "replica": "b"})) as (b, _),
            httpx.AsyncClient(timeout=30) as c,
        ):
            r = await c.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2})
            assert r.status_code == 200 and a.peers is not None and not a.peers.up
            await nats.start()
            await until(lambda: all(x.peers is not None and x.peers.peers.peers() for x in (a, b)))
    finally:
        await nats.stop()
