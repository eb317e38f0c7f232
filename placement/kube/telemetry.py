"""The placement loop's Prometheus metrics (`flotilla_placement_*`) in a registry passed in by the caller.

Why these: an operator of the cluster asks "is the scheduler keeping up" (solve time, cycles, the
last cycle's age, which /healthz also answers), "how good are its plans" (CP-SAT status, and how
often CP-SAT found nothing better than the greedy fallback), "who is waiting" (pods placed and
pending per tier) and "what did it do to my pods" (bindings, evictions and moves, API errors).
The module is pure bookkeeping: the loop calls `observe_cycle` with the snapshot and the plan it
applied, so the update rules are unit-tested without a cluster or a server. Time comes from a
clock passed in, so health is deterministic under test.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flotilla.placement.types.plan import Plan
from flotilla.placement.types.snapshot import Snapshot

PREFIX = "flotilla_placement"
_SOLVE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)

# solver_runs{status}: CP-SAT's own verdict, or how the greedy plan came to be applied instead
UNKNOWN = "UNKNOWN"  # CP-SAT found no solution within the budget: the best-fit plan was applied
GREEDY_FALLBACK = "GREEDY_FALLBACK"  # CP-SAT's plan was worse than best-fit's: best-fit was applied


def solver_outcome(plan: Plan) -> str:
    """OPTIMAL, FEASIBLE, UNKNOWN or GREEDY_FALLBACK (or HEURISTIC for a heuristic solver plugged in)."""
    if "no solution in budget" in plan.approach:
        return UNKNOWN
    if "best-fit kept" in plan.approach:
        return GREEDY_FALLBACK
    return str(plan.status)


class PlacementMetrics:
    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self._clock = clock
        self._last_cycle = clock()  # start-up counts as a heartbeat: the first cycle needs time too
        self.solve_seconds = Histogram(
            f"{PREFIX}_solve_seconds",
            "Wall time of one solve (greedy warm start, model, CP-SAT stages, decode).",
            buckets=_SOLVE_BUCKETS,
            registry=registry,
        )
        self.solver_runs = Counter(
            f"{PREFIX}_solver_runs",
            "Solves by outcome: OPTIMAL, FEASIBLE, UNKNOWN (no CP-SAT solution in budget, best-fit "
            "applied), GREEDY_FALLBACK (best-fit beat CP-SAT's plan and was applied).",
            ["status"],
            registry=registry,
        )
        self.cycles = Counter(
            f"{PREFIX}_cycles", "Scheduling cycles by result.", ["result"], registry=registry
        )
        self.pods_placed = Gauge(
            f"{PREFIX}_pods_placed",
            "Flotilla pods bound to a node after the last cycle, per priority tier.",
            ["tier"],
            registry=registry,
        )
        self.pods_pending = Gauge(
            f"{PREFIX}_pods_pending",
            "Flotilla pods still pending after the last cycle, per priority tier.",
            ["tier"],
            registry=registry,
        )
        self.bindings = Counter(f"{PREFIX}_bindings", "Pods bound to a node.", registry=registry)
        self.evictions = Counter(
            f"{PREFIX}_evictions",
            "Pods evicted, by reason: preempted (for a higher tier) or moved (to defragment).",
            ["reason"],
            registry=registry,
        )
        self.unplaced = Counter(
            f"{PREFIX}_unplaced",
            "Pods a plan left pending (each cycle counts them again).",
            registry=registry,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Failures by operation: cycle (snapshot or solve raised), bind, evict, event, status.",
            ["operation"],
            registry=registry,
        )
        self.last_cycle = Gauge(
            f"{PREFIX}_last_cycle_timestamp_seconds",
            "Unix time at which the last scheduling cycle ended.",
            registry=registry,
        )

    def observe_solve(self, plan: Plan, seconds: float) -> None:
        self.solve_seconds.observe(seconds)
        self.solver_runs.labels(status=solver_outcome(plan)).inc()

    def observe_cycle(self, snapshot: Snapshot, plan: Plan | None, bound: set[str]) -> None:
        """After a cycle: placed and pending per tier, given the pods this cycle actually bound.

        Only flotilla's pods count (pods of other schedulers are in the snapshot as capacity).
        Evicted pods leave the placed count; their replacements show up as pending next cycle.
        """
        evicted = set() if plan is None else {e.pod for e in plan.evictions} | {m.pod for m in plan.moves}
        placed: Tally[int] = Tally(p.tier for p in snapshot.bound if p.managed and p.name not in evicted)
        placed.update(p.tier for p in snapshot.pending if p.name in bound)
        pending: Tally[int] = Tally(p.tier for p in snapshot.pending if p.name not in bound)
        # tiers come and go with fleets: drop the series of tiers no pod has any more
        self.pods_placed.clear()
        self.pods_pending.clear()
        tiers = {p.tier for p in snapshot.bound if p.managed} | {p.tier for p in snapshot.pending}
        for tier in sorted(tiers):
            self.pods_placed.labels(tier=str(tier)).set(placed[tier])
            self.pods_pending.labels(tier=str(tier)).set(pending[tier])
        self.cycles.labels(result="idle" if plan is None else "solved").inc()
        self.cycle_done()

    def cycle_failed(self) -> None:
        self.errors.labels(operation="cycle").inc()
        self.cycles.labels(result="failed").inc()
        self.cycle_done()

    def cycle_done(self) -> None:
        self._last_cycle = self._clock()
        self.last_cycle.set_to_current_time()

    def healthy(self, max_age_s: float) -> bool:
        """A cycle ended within `max_age_s` (the loop cycles at least every resync): not wedged."""
        return self._clock() - self._last_cycle <= max_age_s
