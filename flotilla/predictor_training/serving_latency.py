"""What length prediction adds to a request in the router, measured through the router's own path.

Requests arrive in bursts or as a Poisson process and ask `PredictorService.estimate` for their
estimate, as the request path does; the time until it answers is what prediction adds to the
request. Three ways of serving are compared side by side on the same arrivals, so that the ratios
hold on this noisy shared machine:

- `wait-always`: every request waits for its own learned prediction, one scoring thread (what
  the router did before the deadline): the cost of a burst falls on every request of it;
- `deadline`: the prediction could change the dispatch (KV check on, nothing queued), so the
  request waits for it at most the deadline, then goes on with the fallback estimate;
- `not-needed`: the default configuration (no KV check, `predicted_load` or any other built-in
  policy, or a queue): the request does not wait; its prediction still lands and corrects the
  accounting.

For the requests that went on with the fallback, `late` is when their learned prediction landed
(from arrival): how long the accounting carried the fallback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from flotilla.router.predictor.predictor import Predictor
from flotilla.router.predictor.text import PredictorInput

MODES: dict[str, dict[str, Any]] = {
    "wait-always": {"deadline_s": 3600.0, "matters": True, "batching": {"workers": 1, "max_batch": 8}},
    "deadline": {"matters": True},
    "not-needed": {"matters": False},
}


def arrivals(pattern: str, n: int, rng: np.random.Generator) -> list[float]:
    """Arrival offsets (s): `burst16` (16 at once every 0.25 s) or `<rate>rps` (Poisson)."""
    if pattern == "burst16":
        return [0.25 * (i // 16) for i in range(n)]
    rate = float(pattern.removesuffix("rps"))
    return list(np.cumsum(rng.exponential(1.0 / rate, n)))


async def _serve(
    predictor: Predictor,
    feats: Sequence[PredictorInput],
    at: Sequence[float],
    mode: dict[str, Any],
    deadline_s: float,
) -> dict[str, list[float]]:
    from prometheus_client import CollectorRegistry

    from flotilla.router.metrics import RouterMetrics
    from flotilla.router.policies.base import RequestFeatures as RouterFeatures
    from flotilla.router.predictor_service import PredictorService

    svc = PredictorService(
        RouterMetrics(CollectorRegistry()),
        loader=lambda ref: predictor,
        batching=mode.get("batching"),
        deadline_s=mode.get("deadline_s", deadline_s),
        matters=lambda request: bool(mode["matters"]),
    )
    svc.want({"m": "bench"})
    await svc.ready("m")
    added: list[float] = []
    late: list[float] = []

    async def one(f: PredictorInput) -> None:
        t = time.perf_counter()
        est = await svc.estimate(RouterFeatures(model="m", prompt_tokens=f.prompt_tokens), f.text)
        added.append(time.perf_counter() - t)
        if est.late is not None:
            await est.late
            late.append(time.perf_counter() - t)

    # Warm-up (first BLAS calls, thread start), not measured; other texts, so no cache hits later.
    await asyncio.gather(*(one(PredictorInput(f.text + " (warm-up)", f.prompt_tokens)) for f in feats[:8]))
    added.clear()
    late.clear()
    start = time.perf_counter()
    tasks = []
    for f, offset in zip(feats, at, strict=False):
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        tasks.append(asyncio.create_task(one(f)))
    await asyncio.gather(*tasks)
    await svc.aclose()
    return {"added": added, "late": late}


def measure_serving_latency(
    predictor: Predictor,
    feats: Sequence[PredictorInput],
    patterns: Sequence[tuple[str, int]] = (("burst16", 160), ("20rps", 200), ("100rps", 300)),
    deadline_s: float = 0.005,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """pattern -> mode -> added p50/p99/max (ms), share of requests on the fallback, late p50/p99."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for pattern, n in patterns:
        at = arrivals(pattern, n, np.random.default_rng(seed))
        out[pattern] = {}
        for name, mode in MODES.items():
            got = asyncio.run(_serve(predictor, feats[:n], at, mode, deadline_s))
            added, late = np.array(got["added"]) * 1e3, np.array(got["late"]) * 1e3
            row = {
                "added_p50_ms": float(np.percentile(added, 50)),
                "added_p99_ms": float(np.percentile(added, 99)),
                "added_max_ms": float(added.max()),
                "fallback_share": len(late) / len(added),
            }
            if len(late):
                row |= {
                    "late_p50_ms": float(np.percentile(late, 50)),
                    "late_p99_ms": float(np.percentile(late, 99)),
                }
            out[pattern][name] = row
    return out


def render_serving_latency(lat: dict[str, dict[str, dict[str, float]]], deadline_s: float) -> list[str]:
    lines = [
        f"Time prediction adds to a request (ms; deadline {deadline_s * 1e3:g} ms; `late`: arrival to the"
        " learned prediction landing, for requests that went on with the fallback):",
        "",
        "| arrivals | serving | added p50 | added p99 | added max | on fallback | late p50 | late p99 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for pattern, modes in lat.items():
        for name, r in modes.items():
            late = f"{r['late_p50_ms']:.1f} | {r['late_p99_ms']:.1f}" if "late_p50_ms" in r else "- | -"
            lines.append(
                f"| {pattern} | {name} | {r['added_p50_ms']:.2f} | {r['added_p99_ms']:.2f} "
                f"| {r['added_max_ms']:.2f} | {r['fallback_share']:.0%} | {late} |"
            )
    return lines
