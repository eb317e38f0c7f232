"""The in-cluster scheduler: batch arrivals, snapshot, solve, then evict, bind and explain.

One cycle lists every node and pod (pods bound by other schedulers included), solves in a worker
thread so the event loop stays responsive, and applies the plan in a safe order: evictions and moves
first; a binding waits for the next cycle when its node still has pods being evicted (kube-scheduler
nominates and retries the same way), so the kubelet never sees an over-committed node. Pods left
pending get a FailedScheduling Event and a PodScheduled=False (reason Unschedulable) condition with
the reason, as kube-scheduler gives them; the operator, the one writer of fleet status, reports
them in the fleet's Unschedulable condition.
Cycles run when pods or nodes change (after a short batching window) and every `resync_s` while
pods are pending, so freed capacity is picked up. Every cycle updates the `telemetry` metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field

from flotilla.api import labels as api
from flotilla.placement.cpsat.solver import solve
from flotilla.placement.kube.clusterapi import ClusterApi
from flotilla.placement.kube.kubeconv import build_snapshot
from flotilla.placement.kube.telemetry import PlacementMetrics
from flotilla.placement.rules.explain import explain_unplaced
from flotilla.placement.types.plan import Plan
from flotilla.placement.types.snapshot import Snapshot

log = logging.getLogger(__name__)


class LoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduler_name: str = api.SCHEDULER_NAME
    batch_window_s: float = Field(0.25, ge=0, description="Wait this long after a change to batch arrivals.")
    budget_s: float = Field(1.0, gt=0, description="Solver time budget per cycle.")
    workers: int = Field(0, ge=0, description="CP-SAT workers (0: all cores).")
    resync_s: float = Field(5.0, gt=0, description="Retry pending pods at least this often.")


Solver = Callable[[Snapshot], Plan]


class PlacementLoop:
    def __init__(
        self,
        cluster: ClusterApi,
        config: LoopConfig,
        solver: Solver | None = None,
        metrics: PlacementMetrics | None = None,
    ) -> None:
        self._cluster = cluster
        self._config = config
        self._solve: Solver = solver or (lambda s: solve(s, config.budget_s, workers=config.workers))
        self._unschedulable: dict[str, str] = {}
        """Pending pod -> the message last written to its PodScheduled condition (written on change)."""
        # Counted even when nobody serves them: one code path, no None check at every event.
        self._metrics = metrics if metrics is not None else PlacementMetrics(CollectorRegistry())

    async def cycle(self) -> Plan | None:
        """One round: snapshot, solve, apply. Returns the plan, or None when nothing was pending."""
        nodes, pods = await asyncio.gather(self._cluster.list_nodes(), self._cluster.list_pods())
        snapshot = build_snapshot(nodes, pods, self._config.scheduler_name)
        if not snapshot.pending:
            self._unschedulable.clear()
            self._metrics.observe_cycle(snapshot, None, set())
            return None
        started = time.perf_counter()
        plan = await asyncio.to_thread(self._solve, snapshot)
        self._metrics.observe_solve(plan, time.perf_counter() - started)
        log.info(
            "placement: %d pending, %d bound, %d evicted, %d moved, %d unplaced (%s, %s, %.2f s)",
            len(snapshot.pending),
            len(plan.bindings),
            len(plan.evictions),
            len(plan.moves),
            len(plan.unplaced),
            plan.approach,
            plan.status,
            time.perf_counter() - started,
        )
        bound = await self.apply(snapshot, plan)
        self._metrics.observe_cycle(snapshot, plan, bound)
        return plan

    async def _do(self, action: Awaitable[None], what: str, operation: str) -> bool:
        """One API call; a failure (pod deleted meanwhile, namespace terminating, PDB) is logged and
        counted, and the rest of the plan still goes ahead: the next cycle sees the truth again."""
        try:
            await action
        except Exception as exc:
            log.warning("placement: %s failed: %s", what, str(exc).splitlines()[0] if str(exc) else exc)
            self._metrics.errors.labels(operation=operation).inc()
            return False
        return True

    async def apply(self, snapshot: Snapshot, plan: Plan) -> set[str]:
        """Evict, move, bind, explain; returns the pods bound (a binding may wait or fail)."""
        pods = {p.name: p for p in (*snapshot.bound, *snapshot.pending)}
        c = self._cluster
        # a node with pods being evicted takes no new pod before they are gone (even if eviction failed)
        freeing: dict[str, int] = defaultdict(int)
        for e in plan.evictions:
            freeing[e.node] += 1
            if await self._do(c.evict(e.pod), f"evicting {e.pod}", "evict"):
                self._metrics.evictions.labels(reason="preempted").inc()
                message = f"Evicted by flotilla to place higher-tier pods on {e.node}"
                await self._do(c.record_event(e.pod, "Preempted", message, True), "event", "event")
        for m in plan.moves:
            freeing[m.source] += 1
            if await self._do(c.evict(m.pod), f"evicting {m.pod} to move it", "evict"):
                self._metrics.evictions.labels(reason="moved").inc()
                message = f"Evicted by flotilla to defragment {m.source}; planned on {m.target}"
                await self._do(c.record_event(m.pod, "Moved", message, False), "event", "event")
        bound: set[str] = set()
        for b in plan.bindings:
            if freeing.get(b.node):
                message = f"Nominated to {b.node}; binding after {freeing[b.node]} pod(s) there terminate"
                await self._do(
                    c.record_event(b.pod, "WaitingForPreemption", message, False), "event", "event"
                )
                continue
            if await self._do(c.bind(b.pod, b.node), f"binding {b.pod} to {b.node}", "bind"):
                bound.add(b.pod)
                self._metrics.bindings.inc()
                message = f"Successfully assigned {b.pod} to {b.node} ({plan.approach}, {plan.status})"
                await self._do(c.record_event(b.pod, "Scheduled", message, False), "event", "event")
        self._metrics.unplaced.inc(len(plan.unplaced))
        pending = {p.name for p in snapshot.pending}
        self._unschedulable = {k: v for k, v in self._unschedulable.items() if k in pending}
        for name in plan.unplaced:
            reason = explain_unplaced(snapshot, pods[name])
            await self._do(c.record_event(name, "FailedScheduling", reason, True), "event", "event")
            if self._unschedulable.get(name) != reason and await self._do(
                c.mark_unschedulable(name, reason), f"{name} status", "status"
            ):
                self._unschedulable[name] = reason
        return bound

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle on changes (batched) and every `resync_s` while pods wait, until `stop` is set."""
        wake = asyncio.Event()

        async def watch() -> None:
            async for _ in self._cluster.changes():
                wake.set()

        watcher = asyncio.create_task(watch())
        try:
            while not stop.is_set():
                try:
                    plan = await self.cycle()
                except Exception:
                    log.exception("placement cycle failed; retrying after resync")
                    self._metrics.cycle_failed()
                    plan = None
                if plan is not None and not plan.unplaced and not plan.evictions and not plan.moves:
                    wake.clear()  # everything placed: our own bindings need no second look
                waiter = asyncio.create_task(wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait(
                    {waiter, stopper}, timeout=self._config.resync_s, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                stopper.cancel()
                wake.clear()
                await asyncio.sleep(self._config.batch_window_s)
        finally:
            watcher.cancel()
