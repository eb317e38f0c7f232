"""One fault under load: start the trace, inject at `pre_s`, wait for recovery while the load
runs on, let every request finish, and summarise what the clients saw.

`summarize` is pure (unit-tested): requests are grouped by when they were sent: before the fault,
during it (sent between injection and full recovery) and after; p99 latency is end-to-end, to the
stream's `[DONE]`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from flotilla.chaos.faults import Fault
from flotilla.chaos.rig import Rig
from flotilla.chaos.workload import LoadRun, LoadSpec, Outcome, run_load, steady_requests


@dataclass(frozen=True)
class Phases:
    pre_s: float = 5.0
    """Load before the fault."""
    post_s: float = 5.0
    """Load after full recovery."""
    recovery_timeout_s: float = 90.0
    """Give up waiting for recovery after this (the fault then reports no recovery)."""


@dataclass
class FaultResult:
    fault: str
    what: str
    injected_s: float
    recovered_s: float | None
    notes: dict[str, Any]
    summary: dict[str, Any]
    failovers: float
    refused_retried: int
    timeline: list[dict[str, Any]] = field(default_factory=list)
    """(sent_s, latency_s, complete) per request, for the plot."""

    @property
    def recovery_s(self) -> float | None:
        return None if self.recovered_s is None else self.recovered_s - self.injected_s

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["recovery_s"] = self.recovery_s
        return out


def _p99(values: list[float]) -> float | None:
    return float(np.percentile(values, 99)) if values else None


def summarize(outcomes: list[Outcome], injected_s: float, recovered_s: float | None) -> dict[str, Any]:
    """Counts and p99 latency (s) before, during and after the fault."""
    end = recovered_s if recovered_s is not None else float("inf")

    def phase(o: Outcome) -> str:
        return "before" if o.sent_s < injected_s else "during" if o.sent_s < end else "after"

    out: dict[str, Any] = {
        "sent": len(outcomes),
        "complete": sum(o.complete for o in outcomes),
        "lost": sum(not o.complete for o in outcomes),
        "error_responses": sum(o.status not in (0, 200) for o in outcomes),
        "errors": sorted({o.error for o in outcomes if o.error})[:5],
    }
    for name in ("before", "during", "after"):
        latencies = [o.latency_s for o in outcomes if phase(o) == name and o.latency_s is not None]
        out[f"{name}_requests"] = sum(phase(o) == name for o in outcomes)
        out[f"p99_{name}_s"] = _p99(latencies)
    return out


async def run_fault(rig: Rig, fault: Fault, spec: LoadSpec, phases: Phases) -> FaultResult:
    """Run `fault` under `spec`'s load; the rig must be serving when called."""
    requests = steady_requests(spec, rig.spec.model, phases.pre_s + phases.recovery_timeout_s + phases.post_s)
    run = LoadRun()
    stop = asyncio.Event()
    failovers_before = await rig.router_counter("flotilla_router_slices_total", placement="failover")
    load = asyncio.create_task(run_load([r.url for r in rig.routers], requests, run, stop=stop))
    await asyncio.sleep(phases.pre_s)
    injected = run.now()
    try:
        notes = await fault.inject(rig)
        recovered: float | None = None
        deadline = time.monotonic() + phases.recovery_timeout_s
        while time.monotonic() < deadline:
            try:
                if await fault.recovered(rig, notes):
                    recovered = run.now()
                    break
            except Exception as exc:  # the API server may be down for a moment: poll on
                notes["last_poll_error"] = repr(exc)
            await asyncio.sleep(0.25)
        if recovered is not None:
            await asyncio.sleep(phases.post_s)
    finally:
        stop.set()
        await load
    # The restarted replica's counters start at zero: failovers are counted over the replicas now up.
    failovers_after = await rig.router_counter("flotilla_router_slices_total", placement="failover")
    if fault.cleanup is not None:
        await fault.cleanup(rig, notes)
    return FaultResult(
        fault=fault.name,
        what=fault.what,
        injected_s=injected,
        recovered_s=recovered,
        notes=notes,
        summary=summarize(run.outcomes, injected, recovered),
        failovers=max(0.0, failovers_after - failovers_before),
        refused_retried=sum(o.refused_retried for o in run.outcomes),
        timeline=[
            {"sent_s": round(o.sent_s, 3), "latency_s": o.latency_s, "complete": o.complete}
            for o in sorted(run.outcomes, key=lambda o: o.sent_s)
        ],
    )
