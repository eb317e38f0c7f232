"""Best-fit decreasing, gang-aware: the fast heuristic that is both a baseline and the solver's warm start.

Units (a gang, or a lone pod) go highest tier first, biggest first; each pod takes the feasible node
it fills most tightly on GPUs (then CPU), so partially used nodes fill up before fresh ones are
broken into and whole nodes stay free for TP=8 replicas. A unit that fits nowhere may preempt
lower-tier, non-gang pods (kube's minimal-victim rule); a gang that cannot be completed is rolled back.
It always returns a valid plan, which is why the solver starts from it and falls back to it.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict

import numpy as np

from flotilla.placement.heuristics.preemption import find_preemption
from flotilla.placement.rules.faststate import FastState
from flotilla.placement.types.plan import Plan, Status
from flotilla.placement.types.planbuild import plan_from_assignment
from flotilla.placement.types.snapshot import Pod, Snapshot, SpreadMode


def units_in_order(pending: tuple[Pod, ...]) -> list[list[Pod]]:
    units: dict[str, list[Pod]] = defaultdict(list)
    for pod in pending:
        units[pod.unit].append(pod)

    def key(unit: list[Pod]) -> tuple[int, int, int]:
        return (-unit[0].tier, -sum(p.requests.gpu for p in unit), -sum(p.requests.cpu_m for p in unit))

    return sorted(units.values(), key=key)


def _pack_node(state: FastState, pod: Pod, part: int | None) -> int | None:
    """For a pack fleet: the best-fitting feasible node in a domain where the fleet already runs."""
    nodes = state.pack_candidates(pod)
    if nodes is None:
        return None
    free = state.free[nodes]
    ok = free[:, 0] >= pod.requests.gpu
    if not ok.any():  # the usual miss: the fleet's nodes are full; checked before anything dearer
        return None
    ok &= state.eligible_mask(pod)[nodes] & (free >= state.demand(pod)).all(axis=1)
    if part is not None:
        ok &= state.part_of[nodes] == part
    if pod.spread is not None:
        spread_ok = state.spread_ok(pod)
        if spread_ok is not None:
            ok &= spread_ok[nodes]
    if not ok.any():
        return None
    return int(nodes[ok][np.argmin(free[ok, 0])])


def best_node(state: FastState, pod: Pod, part: int | None = None) -> int | None:
    """A feasible node (in `part`, if given) left with the fewest free GPUs.

    Scans the free-GPU buckets upwards from the pod's request, so a placement costs a few checks
    rather than a pass over every node. A pack pod first joins its fleet's domains (pods of one
    fleet arrive over several cycles; best fit alone would scatter them over equally full nodes).
    """
    if pod.pack is not None:
        joined = _pack_node(state, pod, part)
        if joined is not None:
            return joined
    need = pod.requests.gpu
    eligible = state.eligible_mask(pod)
    parts = [state.buckets[part]] if part is not None else list(state.buckets.values())
    levels = sorted({k for levels in parts for k, nodes in levels.items() if k >= need and nodes})
    # a soft-spread pod first looks for a node below its fleet's cap, then anywhere
    soft = pod.spread is not None and pod.spread.mode is SpreadMode.SOFT
    for respect_soft_cap in (True, False) if soft else (False,):
        for level in levels:
            for levels_of_part in parts:
                for node in levels_of_part.get(level, ()):
                    if (
                        eligible[node]
                        and state.fits(pod, node)
                        and (not respect_soft_cap or state.under_soft_cap(pod, node))
                    ):
                        return node
    return None


def _failure_key(pod: Pod) -> tuple[object, ...]:
    return (
        pod.demand.as_tuple(),
        pod.tolerations,
        pod.node_selector,
        pod.spread,
        pod.pack,
        pod.fleet if pod.spread or (pod.pack and pod.pack.mode is SpreadMode.HARD) else "",
    )


def greedy_assignment(snapshot: Snapshot, preempt: bool = True, seed: int = 0) -> dict[str, str]:
    """Pod name -> node for every pod running after best-fit (bound pods kept unless preempted)."""
    rng = random.Random(seed)
    state = FastState(snapshot)
    # pods that found no node keep failing until something is removed: skip the scan for them
    failed: set[tuple[object, ...]] = set()
    removals = 0
    for unit in units_in_order(snapshot.pending):
        mark = state.mark()
        complete = True
        for pod in unit:
            if state.removals != removals:
                failed.clear()
                removals = state.removals
            key = _failure_key(pod)
            node = None if key in failed else best_node(state, pod)
            if node is None:
                failed.add(key)
            if node is None and preempt and (key, pod.tier) not in failed:
                found = find_preemption(state, pod, rng, protect_gangs=True)
                if found is None:
                    failed.add((key, pod.tier))
                else:
                    node, victims = found
                    for v in victims:
                        state.remove(v)
            if node is None:
                complete = False
                break
            state.place(pod, node)
        if not complete:
            state.undo(mark)
    return state.assignment()


def schedule_best_fit(snapshot: Snapshot, preempt: bool = True) -> Plan:
    started = time.perf_counter()
    assignment = greedy_assignment(snapshot, preempt=preempt)
    return plan_from_assignment(
        snapshot,
        assignment,
        status=Status.HEURISTIC,
        approach="best-fit",
        seconds=time.perf_counter() - started,
    )
