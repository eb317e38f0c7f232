"""Faults in the fleet simulator: requests lost, latency during and after, time to recovery.

Each fault scenario replays the same requests as a run without faults (same seed), so the effect of
the fault is read against the same moments of the same trace: requests are grouped into windows
of `window_s` by arrival, and a window's p99 end-to-end latency is compared with the fault-free
run's p99 in the same window. Time to recovery is from the fault to the end of the first window
from which every later window's p99 is within `tolerance` x the fault-free run's, with no request
lost ("not recovered" if none).
Whole requests and slices (the live router's failover resumes a sliced request from its last
streamed token on another instance) run side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from flotilla.profiles import EngineLimits, StepTimeProfile
from flotilla.sim.faults import Fault
from flotilla.sim.request import SimRequest
from flotilla.sim.scenario import Scenario
from flotilla.sim.simulator import RunResult, SimConfig, simulate


@dataclass(frozen=True)
class FaultCase:
    name: str
    faults: tuple[Fault, ...]
    at: float
    """When the (first) fault happens."""


@dataclass(frozen=True)
class FaultRow:
    case: str
    slice_tokens: int
    requests: int
    lost: int
    p99_before: float
    p99_during: float
    """Requests arriving in the first `during_s` after the fault."""
    p99_during_no_fault: float
    p99_after: float
    """Requests arriving after that."""
    p99_after_no_fault: float
    recovery_s: float | None
    """None: not back within tolerance by the end of the run."""


def cases(instances: int, at: float, later: float) -> list[FaultCase]:
    quarter = max(1, instances // 4)
    return [
        FaultCase("kill 1 engine", (Fault(kind="kill", instance=0, at=at),), at),
        FaultCase(
            f"kill {quarter} engines",
            tuple(Fault(kind="kill", instance=j, at=at) for j in range(quarter)),
            at,
        ),
        FaultCase(
            f"scale down by {quarter} (drain), back up at +{later - at:.0f} s",
            tuple(Fault(kind="remove", instance=j, at=at) for j in range(quarter))
            + tuple(Fault(kind="add", instance=j, at=later) for j in range(quarter)),
            at,
        ),
    ]


def _p99(e2e: np.ndarray, mask: np.ndarray) -> float:
    x = e2e[mask & np.isfinite(e2e)]
    return float(np.percentile(x, 99)) if x.size else float("nan")


def recovery(
    base: RunResult, hit: RunResult, at: float, *, window_s: float, tolerance: float
) -> float | None:
    """Seconds from `at` to the end of the first window from which the p99 stays within tolerance."""
    e_base, e_hit = base.finished - base.arrival, hit.finished - hit.arrival
    ok: list[tuple[float, bool]] = []
    t = at
    end = float(np.nanmax(hit.arrival))
    while t < end:
        m = (hit.arrival >= t) & (hit.arrival < t + window_s)
        if m.sum() >= 5:
            # A lost request counts as never served: it breaks its window.
            bad = bool(hit.failed[m].any())
            ok.append((t + window_s, not bad and _p99(e_hit, m) <= tolerance * _p99(e_base, m)))
        t += window_s
    for k, (stop, good) in enumerate(ok):
        if good and all(g for _, g in ok[k:]):
            return stop - at
    return None


def run(
    requests: Sequence[SimRequest],
    *,
    profile: StepTimeProfile,
    limits: EngineLimits,
    config: SimConfig,
    policy: str,
    slice_tokens: int,
    rebalance: dict[str, float],
    fault_cases: Sequence[FaultCase],
    during_s: float,
    window_s: float,
    tolerance: float,
    on_run: Callable[[str], None] = lambda name: None,
) -> list[FaultRow]:
    rows: list[FaultRow] = []
    for s in (0, slice_tokens):
        sc = Scenario(name=policy, policy=policy, slice_tokens=s, slice_rebalance=rebalance if s else {})
        base = simulate(requests, profile, limits, sc, config)
        on_run(f"no fault, S={s or 'off'}")
        e_base = base.finished - base.arrival
        for case in fault_cases:
            hit = simulate(requests, profile, limits, sc, config, faults=case.faults)
            on_run(f"{case.name}, S={s or 'off'}")
            e = hit.finished - hit.arrival
            before = hit.arrival < case.at
            during = (hit.arrival >= case.at) & (hit.arrival < case.at + during_s)
            after = hit.arrival >= case.at + during_s
            rows.append(
                FaultRow(
                    case=case.name,
                    slice_tokens=s,
                    requests=len(requests),
                    lost=int(hit.failed.sum()),
                    p99_before=_p99(e, before),
                    p99_during=_p99(e, during),
                    p99_during_no_fault=_p99(e_base, during),
                    p99_after=_p99(e, after),
                    p99_after_no_fault=_p99(e_base, after),
                    recovery_s=recovery(base, hit, case.at, window_s=window_s, tolerance=tolerance),
                )
            )
    return rows


def markdown(rows: Sequence[FaultRow], *, during_s: float) -> str:
    head = [
        "fault",
        "S",
        "requests lost",
        "p99 e2e before s",
        f"p99 e2e first {during_s:g} s after (no fault) s",
        "p99 e2e later (no fault) s",
        "time to recovery s",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rec = f"{r.recovery_s:.0f}" if r.recovery_s is not None else "not recovered"
        out.append(
            "| "
            + " | ".join(
                [
                    r.case,
                    str(r.slice_tokens) if r.slice_tokens else "off",
                    f"{r.lost} of {r.requests}",
                    f"{r.p99_before:.1f}",
                    f"{r.p99_during:.1f} ({r.p99_during_no_fault:.1f})",
                    f"{r.p99_after:.1f} ({r.p99_after_no_fault:.1f})",
                    rec,
                ]
            )
            + " |"
        )
    return "\n".join(out) + "\n"
