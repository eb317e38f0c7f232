"""Summary metrics of a set of records: percentiles, TPOT, goodput under an SLO, losses."""

from __future__ import annotations

import math

import pytest

from flotilla.loadgen.record import RequestRecord
from flotilla.loadgen.summary import Slo, Stats, summarise, tpot


def rec(i: int, *, sent: float, ttft: float, e2e: float, tokens: int, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        index=i,
        sent_s=sent,
        expected_tokens=tokens,
        status=200 if ok else 503,
        ttft_s=ttft if ok else None,
        e2e_s=e2e,
        itl_s=[(e2e - ttft) / max(1, tokens - 1)] * (tokens - 1) if ok else [],
        output_tokens=tokens if ok else 0,
        chunks=tokens if ok else 0,
        done=ok,
        error="" if ok else "HTTP 503",
    )


def test_stats_percentiles_and_empty() -> None:
    s = Stats.of([float(x) for x in range(1, 101)])
    assert s.mean == 50.5 and s.p50 == 50.5 and s.p99 == pytest.approx(99.01)
    assert math.isnan(Stats.of([]).p99)


def test_tpot_excludes_the_first_token() -> None:
    assert tpot(rec(0, sent=0, ttft=1.0, e2e=2.0, tokens=11)) == pytest.approx(0.1)
    assert tpot(rec(0, sent=0, ttft=1.0, e2e=2.0, tokens=1)) is None


def test_summary_counts_goodput_and_throughput() -> None:
    records = [
        rec(0, sent=0.0, ttft=0.5, e2e=1.5, tokens=11),  # TPOT 0.1: within
        rec(1, sent=1.0, ttft=3.0, e2e=4.0, tokens=11),  # TTFT over the SLO
        rec(2, sent=2.0, ttft=0.5, e2e=3.5, tokens=11),  # TPOT 0.3: over
        rec(3, sent=3.0, ttft=0.0, e2e=1.0, tokens=5, ok=False),
    ]
    s = summarise(records, Slo(ttft_s=2.0, tpot_s=0.1), window_s=4.0)
    assert (s.requests, s.ok, s.errors, s.lost) == (4, 3, 1, 1)
    assert s.goodput_rps == pytest.approx(1 / 4.0)
    assert s.slo_attainment == pytest.approx(0.25)
    assert s.ttft_s.mean == pytest.approx((0.5 + 3.0 + 0.5) / 3)
    # 33 tokens from the first send (0.0) to the last finish (2.0 + 3.5)
    assert s.output_tokens == 33 and s.throughput_tok_s == pytest.approx(33 / 5.5)
    assert s.itl_s.p50 == pytest.approx(0.1)
