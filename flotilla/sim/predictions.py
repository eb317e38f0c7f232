"""The output lengths a scenario's router believes: the router's proxy, a learned artifact, or the truth.

The router predicts once per request, on arrival, and charges the prediction to the instance it
picks (`RequestFeatures.predicted_output_tokens`). Predictions do not depend on load or policy, so
they are computed once per workload and reused; the learned predictor (the predictor issue's
shipped artifact, served with numpy) needs the prompt text, which only CASTILLO workloads have.
"""

from __future__ import annotations

from collections.abc import Sequence

from flotilla.router.policies import RequestFeatures
from flotilla.router.prediction import ProxyPredictor
from flotilla.sim.request import SimRequest

BATCH = 64


def has_text(requests: Sequence[SimRequest]) -> bool:
    return all(r.text is not None for r in requests)


def predict_lengths(
    requests: Sequence[SimRequest], features: Sequence[RequestFeatures], kind: str, artifact: str
) -> list[float]:
    if kind == "oracle":
        return [float(r.output_tokens) for r in requests]
    if kind == "proxy":
        proxy = ProxyPredictor()
        return [proxy.guess(f) for f in features]
    if kind == "learned":
        return learned_lengths(requests, artifact)
    raise ValueError(f"unknown predictor {kind!r}")


def learned_lengths(requests: Sequence[SimRequest], artifact: str) -> list[float]:
    """Calibrated p50 output tokens of the shipped learned predictor `artifact`."""
    from flotilla.router.predictor import text
    from flotilla.router.predictor.predictor import LearnedPredictor

    if not has_text(requests):
        raise ValueError("the learned predictor needs prompt text; this workload has none")
    predictor = LearnedPredictor.load(artifact)
    out: list[float] = []
    for i in range(0, len(requests), BATCH):
        batch = [
            text.PredictorInput(text=r.text or "", prompt_tokens=r.prompt_tokens)
            for r in requests[i : i + BATCH]
        ]
        out += [float(p.p50) for p in predictor.predict(batch)]
    return out
