"""What a run is judged by: latency percentiles, throughput, goodput under an SLO, imbalance.

TTFT is arrival (when the request could first be sent) to first token, so router queueing counts;
TPOT is the mean time per output token after the first; goodput counts only requests that met both
SLO bounds. Load imbalance is the coefficient of variation (std / mean) of the requests on each
instance (running + waiting, as scraped), averaged over the scrapes at which the fleet held any.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flotilla.sim.simulator import RunResult


class Slo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_s: float = Field(default=2.0, gt=0)
    tpot_s: float = Field(default=0.1, gt=0)


@dataclass(frozen=True)
class Summary:
    completed: int
    e2e_mean: float
    e2e_p50: float
    e2e_p99: float
    ttft_mean: float
    ttft_p50: float
    ttft_p99: float
    tpot_mean: float
    tpot_p50: float
    tpot_p99: float
    queue_mean: float
    throughput_rps: float
    tokens_per_s: float
    goodput_rps: float
    slo_attainment: float
    imbalance_cv: float
    preemptions: int
    prefix_hit_rate: float


def _stats(x: np.ndarray) -> tuple[float, float, float]:
    x = x[np.isfinite(x)]
    if not x.size:
        return float("nan"), float("nan"), float("nan")
    return float(x.mean()), float(np.percentile(x, 50)), float(np.percentile(x, 99))


def summarize(r: RunResult, slo: Slo) -> Summary:
    done = np.isfinite(r.finished)
    e2e = r.finished - r.arrival
    ttft = r.first_token - r.arrival
    many = done & (r.output_tokens > 1)
    tpot = np.full(len(e2e), np.nan)
    tpot[many] = (r.finished[many] - r.first_token[many]) / (r.output_tokens[many] - 1)
    span = float(np.nanmax(r.finished) - np.nanmin(r.arrival)) if done.any() else float("nan")
    tpot_ok = np.where(r.output_tokens > 1, np.nan_to_num(tpot, nan=np.inf) < slo.tpot_s, True)
    good = done & (np.nan_to_num(ttft, nan=np.inf) < slo.ttft_s) & tpot_ok
    loads = r.loads.astype(float)
    means = loads.mean(axis=1) if loads.size else np.zeros(0)
    busy = means > 0
    cv = float((loads[busy].std(axis=1) / means[busy]).mean()) if busy.any() else 0.0
    queries = int(r.instance_prefix_queries.sum())
    return Summary(
        completed=int(done.sum()),
        **dict(zip(("e2e_mean", "e2e_p50", "e2e_p99"), _stats(e2e), strict=True)),
        **dict(zip(("ttft_mean", "ttft_p50", "ttft_p99"), _stats(ttft), strict=True)),
        **dict(zip(("tpot_mean", "tpot_p50", "tpot_p99"), _stats(tpot), strict=True)),
        queue_mean=_stats(r.admitted - r.arrival)[0],
        throughput_rps=float(done.sum()) / span,
        tokens_per_s=float(r.output_tokens[done].sum()) / span,
        goodput_rps=float(good.sum()) / span,
        slo_attainment=float(good.sum()) / len(e2e),
        imbalance_cv=cv,
        preemptions=int(r.instance_preemptions.sum()),
        prefix_hit_rate=float(r.instance_prefix_hits.sum()) / queries if queries else 0.0,
    )
