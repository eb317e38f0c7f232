"""The router's learned-predictor service: loading per model, fallback, metrics, feature log."""

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies import RequestFeatures
from flotilla.router.predictor import Prediction, PredictorInput
from flotilla.router.predictor.metrics import kendall_tau_b as kendall_tau
from flotilla.router.predictor_service import PredictorService


class WordCount:
    """A deterministic stand-in for a learned predictor: 10 output tokens per prompt word."""

    name = "words-v1"

    def embed(self, batch: Sequence[PredictorInput]) -> np.ndarray:
        return np.array([[len(r.text.split()), r.prompt_tokens] for r in batch], dtype=np.float32)

    def predict_embedded(self, z: np.ndarray, max_tokens: Sequence[int | None]) -> list[Prediction]:
        out = []
        for row, cap in zip(z, max_tokens, strict=True):
            p50 = 10.0 * float(row[0])
            out.append(Prediction(score=float(row[0]), p50=min(p50, cap or p50), p90=2 * p50))
        return out

    def predict(self, batch: Sequence[PredictorInput]) -> list[Prediction]:
        return self.predict_embedded(self.embed(batch), [r.max_tokens for r in batch])


def feats(prompt_tokens: int = 8, max_tokens: int | None = None) -> RequestFeatures:
    return RequestFeatures(model="m", prompt_tokens=prompt_tokens, max_tokens=max_tokens)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def wait_state(svc: PredictorService, model: str, want: str) -> None:
    for _ in range(200):
        if svc.state(model).startswith(want):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(svc.state(model))


async def test_named_predictor_is_loaded_and_used() -> None:
    reg = CollectorRegistry()
    loaded: list[str] = []

    def loader(ref: str) -> WordCount:
        loaded.append(ref)
        return WordCount()

    # A generous deadline: these tests are about loading, not about the deadline (tested below).
    svc = PredictorService(RouterMetrics(reg), loader=loader, deadline_s=30.0)
    assert (await svc.estimate(feats(), "one two three")).predictor == "proxy"
    svc.want({"m": "words", "other": None})
    await wait_state(svc, "m", "words-v1")
    assert loaded == ["words"] and svc.state("other") == "proxy"
    est = await svc.estimate(feats(max_tokens=25), "one two three")
    assert est.tokens == 25.0 and est.predictor == "words-v1"  # capped by max_tokens
    est = await svc.estimate(feats(), "one two three")
    assert est.tokens == 30.0 and est.features is not None
    assert value(reg, "flotilla_router_predictor_in_use", model="m", predictor="words") == 1
    svc.want({"m": "words"})  # unchanged: no reload
    assert loaded == ["words"]
    await svc.aclose()


async def test_failed_load_falls_back_to_proxy_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    reg = CollectorRegistry()

    def loader(ref: str) -> WordCount:
        raise ModuleNotFoundError("No module named 'tokenizers'")

    svc = PredictorService(RouterMetrics(reg), loader=loader)
    with caplog.at_level(logging.WARNING, logger="flotilla.router.predictor"):
        svc.want({"m": "llama"})
        await wait_state(svc, "m", "failed")
    assert "tokenizers" in svc.state("m")
    assert any("proxy" in r.getMessage() for r in caplog.records)
    est = await svc.estimate(feats(prompt_tokens=7), "x")
    assert est.predictor == "proxy" and est.tokens == 7.0
    assert value(reg, "flotilla_router_predictor_in_use", model="m", predictor="proxy") == 1
    await svc.aclose()


async def test_default_loader_with_missing_artifact_keeps_router_up(tmp_path: object) -> None:
    from flotilla.router.predictor_service import default_loader

    svc = PredictorService(RouterMetrics(CollectorRegistry()), loader=default_loader(str(tmp_path)))
    svc.want({"m": "no-such-predictor"})
    await wait_state(svc, "m", "failed")
    assert (await svc.estimate(feats(), "x")).predictor == "proxy"
    await svc.aclose()


async def test_observe_exports_accuracy_and_logs_features() -> None:
    reg = CollectorRegistry()
    svc = PredictorService(RouterMetrics(reg), loader=lambda ref: WordCount(), deadline_s=30.0)
    svc.want({"m": "words"})
    await wait_state(svc, "m", "words-v1")
    for words in range(1, 33):
        est = await svc.estimate(feats(), " ".join(["w"] * words))
        svc.observe(feats(), est, output_tokens=5 * words)  # perfectly ranked, 2x too long
    assert value(reg, "flotilla_router_predictor_ratio_count", model="m") == 32
    assert value(reg, "flotilla_router_predictor_ratio_bucket", model="m", le="1.5") == 0
    assert value(reg, "flotilla_router_predictor_ratio_bucket", model="m", le="2.0") == 32
    assert value(reg, "flotilla_router_predictor_tau", model="m") == pytest.approx(1.0)
    log = svc.feature_log
    assert log is not None
    snap = log.snapshot("m")
    assert len(snap) == 32 and snap.output_tokens[-1] == 160 and snap.features.shape == (32, 2)
    await svc.aclose()


def test_kendall_tau() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert kendall_tau(x, x) == pytest.approx(1.0)
    assert kendall_tau(x, -x) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau(x, np.ones(4)))
