"""What a run is judged by: latency percentiles, throughput, goodput under an SLO, imbalance.

TTFT is arrival (when the request could first be sent) to first token, so router queueing counts;
TPOT is the mean time per output token after the first. Throughput and goodput are completion rates
between the 20th and 80th percentile of completion times, so a run's empty start and its drain do
not dilute them (a trace slice replayed at high rate lasts only tens of seconds); goodput counts
only requests that met both SLO bounds. Load imbalance is the coefficient of variation (std / mean)
of the requests on each instance (running + waiting, as scraped), averaged over the scrapes at
which the fleet held any.
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


def _middle(finished: np.ndarray) -> tuple[float, float]:
    """The 20th to 80th percentile of completion times: the run without its start-up and drain."""
    if finished.size < 5:
        return float(finished.min(initial=0.0)), float(finished.max(initial=0.0))
    lo, hi = np.percentile(finished, [20, 80])
    return float(lo), float(hi)


def _rate(
    finished: np.ndarray, mask: np.ndarray, window: tuple[float, float], weight: np.ndarray | None = None
) -> float:
    lo, hi = window
    if hi <= lo:
        return float("nan")
    inside = mask & (finished >= lo) & (finished <= hi)
    total = float(weight[inside].sum()) if weight is not None else float(inside.sum())
    return total / (hi - lo)


def summarize(r: RunResult, slo: Slo) -> Summary:
    done = np.isfinite(r.finished)
    e2e = r.finished - r.arrival
    ttft = r.first_token - r.arrival
    many = done & (r.output_tokens > 1)
    tpot = np.full(len(e2e), np.nan)
    tpot[many] = (r.finished[many] - r.first_token[many]) / (r.output_tokens[many] - 1)
    window = _middle(r.finished[done])
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
        throughput_rps=_rate(r.finished, done, window),
        tokens_per_s=_rate(r.finished, done, window, r.output_tokens),
        goodput_rps=_rate(r.finished, good, window),
        slo_attainment=float(good.sum()) / len(e2e),
        imbalance_cv=cv,
        preemptions=int(r.instance_preemptions.sum()),
        prefix_hit_rate=float(r.instance_prefix_hits.sum()) / queries if queries else 0.0,
    )
