"""The chaos benchmark's pure parts: the steady trace load, the per-phase summary, the binder's
node choice and the report table."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.chaos.binder import choose_node
from flotilla.chaos.report import markdown_table
from flotilla.chaos.scenario import summarize
from flotilla.chaos.workload import LoadSpec, Outcome, steady_requests

TRACE = Path("../shared/data/traces/mooncake_conversation_trace.jsonl")


@pytest.mark.skipif(not TRACE.exists(), reason="shared trace data not present")
@pytest.mark.parametrize("rps", [2.0, 5.0])
def test_steady_requests_keep_the_trace_order_at_the_asked_rate(rps: float) -> None:
    spec = LoadSpec(rps=rps, max_input_tokens=512, max_output_tokens=64, trace=TRACE)
    requests = steady_requests(spec, "m", duration_s=30.0)
    assert len(requests) == round(rps * 30)
    times = [r.at_s for r in requests]
    assert times[0] == 0.0 and times == sorted(times)
    # The last arrival lands at count / rps: the mean rate is the one asked for.
    assert times[-1] == pytest.approx(len(requests) / rps)
    assert all(r.model == "m" and 1 <= r.output_tokens <= 64 and r.input_tokens <= 512 for r in requests)


def _outcome(i: int, sent: float, latency: float | None, complete: bool = True, status: int = 200) -> Outcome:
    return Outcome(
        index=i,
        sent_s=sent,
        status=status,
        done_s=None if latency is None else sent + latency,
        complete=complete,
        error="" if complete else "broken",
    )


def test_summary_splits_requests_by_when_they_were_sent() -> None:
    outcomes = [
        _outcome(0, 1.0, 1.0),
        _outcome(1, 2.0, 2.0),
        _outcome(2, 5.0, 3.0),
        _outcome(3, 6.0, None, complete=False, status=0),
        _outcome(4, 9.0, 0.5, complete=False, status=502),
        _outcome(5, 12.0, 1.5),
    ]
    s = summarize(outcomes, injected_s=4.0, recovered_s=10.0)
    assert (s["sent"], s["complete"], s["lost"], s["error_responses"]) == (6, 4, 2, 1)
    assert (s["before_requests"], s["during_requests"], s["after_requests"]) == (2, 3, 1)
    assert s["p99_before_s"] == pytest.approx(1.99)
    assert s["p99_after_s"] == pytest.approx(1.5)
    assert s["errors"] == ["broken"]


def test_without_recovery_everything_after_the_fault_is_during() -> None:
    s = summarize([_outcome(0, 1.0, 1.0), _outcome(1, 50.0, 1.0)], injected_s=2.0, recovered_s=None)
    assert (s["before_requests"], s["during_requests"], s["after_requests"]) == (1, 1, 0)
    assert s["p99_after_s"] is None


def test_binder_picks_the_least_loaded_node_and_none_without_nodes() -> None:
    assert choose_node(["b", "a", "c"], ["a", "b", "b", "x"]) == "c"
    assert choose_node(["b", "a"], []) == "a"
    assert choose_node([], ["a"]) is None


def test_report_table_has_a_row_per_fault() -> None:
    summary = {
        "sent": 10, "lost": 0, "error_responses": 0,
        "p99_before_s": 1.2, "p99_during_s": None, "p99_after_s": 0.9,
    }  # fmt: skip
    result = {
        "fault": "engine-kill",
        "summary": summary,
        "refused_retried": 2,
        "failovers": 3.0,
        "recovery_s": None,
    }
    table = markdown_table([result])
    row = table.strip().splitlines()[-1]
    assert row == "| engine-kill | 10 | 0 | 0 | 2 | 3 | 1,200 | - | 900 | not within the limit |"
