"""The learned length predictor plugged into a live router by configuration."""

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
import pytest

from flotilla.router.predictor import Prediction, PredictorInput
from flotilla.router.predictor.artifact import resolve

MODEL = "sim"


class WordCount:
    name = "words-v1"

    def predict(self, batch: Sequence[PredictorInput]) -> list[Prediction]:
        return [Prediction(float(len(r.text.split())), 10.0 * len(r.text.split()), 0.0) for r in batch]

    def embed(self, batch: Sequence[PredictorInput]) -> np.ndarray:
        return np.array([[len(r.text.split())] for r in batch], dtype=np.float32)

    def predict_embedded(self, z: np.ndarray, max_tokens: Sequence[int | None]) -> list[Prediction]:
        return [Prediction(float(r[0]), 10.0 * float(r[0]), 0.0) for r in z]


async def wait_logged(router: Any, n: int) -> None:
    """Wait (up to 10 s) until the feature log holds `n` finished requests; callers assert it."""
    for _ in range(500):
        log = router.predictors.feature_log
        if log is not None and len(log.snapshot(MODEL)) == n:
            return
        await asyncio.sleep(0.02)


async def test_configured_predictor_feeds_queue_policy_and_metrics(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(2, "--time-scale", "0.02", "--mean-output-tokens", "30")
    loaded: list[str] = []

    def loader(ref: str) -> WordCount:
        loaded.append(ref)
        return WordCount()

    config = router_config(
        procs,
        queue_order="shortest_predicted_first",
        queue_order_params={"aging_per_s": 50, "starvation_s": 5},
        static={
            "instances": [{"url": p.url, "model": MODEL, "name": f"e{i}"} for i, p in enumerate(procs)],
            "models": {MODEL: {"policy": "predicted_load", "predictor": "words"}},
        },
    )
    async with serve_router(config, predictor_loader=loader) as (router, url):
        for _ in range(100):
            if router.predictors.state(MODEL) == "words-v1":
                break
            await asyncio.sleep(0.02)
        assert loaded == ["words"] and router.predictors.state(MODEL) == "words-v1"
        async with httpx.AsyncClient(timeout=30) as c:

            async def one(k: int, stream: bool) -> None:
                body = {
                    "model": MODEL,
                    "prompt": " ".join(["word"] * (1 + k % 7)) + f" {k}",
                    "max_tokens": 80,
                    "temperature": 0,
                    "stream": stream,
                }
                r = await c.post(url + "/v1/completions", json=body)
                assert r.status_code == 200

            await asyncio.gather(*(one(k, k % 2 == 0) for k in range(32)))
            # Requests that did not wait for their prediction are judged as it lands.
            await wait_logged(router, 32)
            metrics = (await c.get(url + "/metrics")).text
    assert f'flotilla_router_predictor_in_use{{model="{MODEL}",predictor="words"}} 1.0' in metrics
    assert f'flotilla_router_predictor_ratio_count{{model="{MODEL}"}} 32.0' in metrics
    assert f'flotilla_router_predictor_tau{{model="{MODEL}"}}' in metrics
    log = router.predictors.feature_log
    assert log is not None and len(log.snapshot(MODEL)) == 32
    # predicted_load accounting returns to zero once everything finished.
    assert all(abs(r.predicted_remaining) < 1e-6 and r.inflight == 0 for r in router.table.all())


async def test_missing_predictor_artifact_router_serves_with_proxy(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    procs = await engines(1, "--time-scale", "0")
    config = router_config(
        procs,
        predictor_artifacts_dir="/nonexistent",
        static={
            "instances": [{"url": procs[0].url, "model": MODEL}],
            "models": {MODEL: {"predictor": "llama-3.1-8b"}},
        },
    )
    async with serve_router(config) as (router, url), httpx.AsyncClient(timeout=30) as c:
        r = await c.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 5})
        assert r.status_code == 200
        for _ in range(100):
            if router.predictors.state(MODEL).startswith("failed"):
                break
            await asyncio.sleep(0.02)
        assert router.predictors.state(MODEL).startswith("failed")


async def test_shipped_artifact_serves_through_the_router(
    engines: Any, router_config: Any, serve_router: Any
) -> None:
    try:
        resolve("llama-3.1-8b")
    except FileNotFoundError:
        pytest.skip("no shipped llama-3.1-8b predictor artifact")
    procs = await engines(1, "--time-scale", "0")
    config = router_config(
        procs,
        queue_order="shortest_predicted_first",
        static={
            "instances": [{"url": procs[0].url, "model": MODEL}],
            "models": {MODEL: {"predictor": "llama-3.1-8b", "policy": "predicted_load"}},
        },
    )
    async with serve_router(config) as (router, url), httpx.AsyncClient(timeout=30) as c:
        for _ in range(500):
            if router.predictors.state(MODEL).startswith("llama-3.1-8b"):
                break
            await asyncio.sleep(0.02)
        assert router.predictors.state(MODEL).startswith("llama-3.1-8b-v")
        for k in range(4):
            msg = [{"role": "user", "content": f"Write a long essay on topic {k}."}]
            r = await c.post(
                url + "/v1/chat/completions", json={"model": MODEL, "messages": msg, "max_tokens": 20}
            )
            assert r.status_code == 200
        # A request may finish before its prediction lands (it does not wait for it): it is judged
        # and logged when the prediction lands.
        await wait_logged(router, 4)
        metrics = (await c.get(url + "/metrics")).text
    assert f'flotilla_router_predictor_ratio_count{{model="{MODEL}"}} 4.0' in metrics
    assert f'flotilla_router_predictor_seconds_count{{model="{MODEL}"}} 4.0' in metrics
    log = router.predictors.feature_log
    assert log is not None and len(log.snapshot(MODEL)) == 4
