"""Metrics of one arm's records: latency percentiles, throughput, goodput under an SLO, losses.

Percentiles are over requests that finished (a lost request has no latency to rank; it is counted
in `lost` instead, and a run with losses is flagged in the report, never averaged away). TPOT is
per request: (e2e - TTFT) / (tokens - 1); ITL pools every gap between streamed chunks of every
request. Goodput counts finished requests meeting both SLOs, per second of the arrival window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from flotilla.loadgen.record import RequestRecord


class Slo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_s: float = 2.0
    tpot_s: float = 0.1


class Stats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            nan = math.nan
            return cls(mean=nan, p50=nan, p90=nan, p99=nan)
        a = np.asarray(values, dtype=float)
        p50, p90, p99 = (float(x) for x in np.percentile(a, [50, 90, 99]))
        return cls(mean=float(a.mean()), p50=p50, p90=p90, p99=p99)


class Summary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int
    ok: int
    errors: int
    lost: int
    ttft_s: Stats
    tpot_s: Stats
    itl_s: Stats
    e2e_s: Stats
    output_tokens: int
    throughput_tok_s: float
    """Output tokens of finished requests per second, first send to last finish."""
    goodput_rps: float
    """Finished requests within both SLOs per second of the arrival window."""
    slo_attainment: float
    """Fraction of all requests finished within both SLOs."""


def tpot(record: RequestRecord) -> float | None:
    if record.ttft_s is None or record.e2e_s is None or record.output_tokens < 2:
        return None
    return (record.e2e_s - record.ttft_s) / (record.output_tokens - 1)


def summarise(records: Sequence[RequestRecord], slo: Slo, window_s: float) -> Summary:
    done = [r for r in records if r.ok]
    ttfts = [r.ttft_s for r in done if r.ttft_s is not None]
    tpots = [t for r in done if (t := tpot(r)) is not None]
    e2es = [r.e2e_s for r in done if r.e2e_s is not None]
    itls = [g for r in done for g in r.itl_s]
    good = sum(
        1
        for r in done
        if r.ttft_s is not None and r.ttft_s <= slo.ttft_s and (tpot(r) or 0.0) <= slo.tpot_s and not r.lost
    )
    finishes = [r.sent_s + r.e2e_s for r in done if r.e2e_s is not None]
    starts = [r.sent_s for r in done]
    span = (max(finishes) - min(starts)) if done else math.nan
    tokens = sum(r.output_tokens for r in done)
    return Summary(
        requests=len(records),
        ok=len(done),
        errors=sum(1 for r in records if not r.ok),
        lost=sum(1 for r in records if r.lost),
        ttft_s=Stats.of(ttfts),
        tpot_s=Stats.of(tpots),
        itl_s=Stats.of(itls),
        e2e_s=Stats.of(e2es),
        output_tokens=tokens,
        throughput_tok_s=tokens / span if span and span > 0 else math.nan,
        goodput_rps=good / window_s if window_s > 0 else math.nan,
        slo_attainment=good / len(records) if records else math.nan,
    )
