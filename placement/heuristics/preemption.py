"""kube-scheduler's default preemption (the DefaultPreemption PostFilter), on the vectorised state.

When a pod fits nowhere: on a sample of nodes, remove every lower-priority pod, check the pod fits,
then reprieve victims from the highest priority down while it still fits (minimal victims). The node
chosen has the lowest highest-victim priority, then the lowest priority sum, then the fewest victims,
as in pickOneNodeForPreemption. Pod disruption budgets and start times are not modelled.
"""

from __future__ import annotations

import random

import numpy as np

from flotilla.placement.rules.faststate import FastState
from flotilla.placement.types.snapshot import Pod

MIN_CANDIDATE_NODES_PERCENTAGE = 10
MIN_CANDIDATE_NODES_ABSOLUTE = 100
PRIORITY_OFFSET = 2**31  # kube adds MaxInt32+1 so that more victims always weigh more


def _victims_on(state: FastState, pod: Pod, node: int, protect_gangs: bool) -> list[Pod] | None:
    demand = state.demand(pod)
    candidates = [
        p
        for p in state.pods_on[node].values()
        if p.managed and p.tier < pod.tier and not (protect_gangs and p.gang is not None)
    ]
    if not candidates:
        return None
    free = state.free[node].copy()
    for p in candidates:
        free += state.demand(p)
    if not (free >= demand).all():
        return None
    victims: list[Pod] = []
    for p in sorted(candidates, key=lambda p: -p.tier):
        d = state.demand(p)
        if ((free - d) >= demand).all():
            free -= d  # reprieved: it stays
        else:
            victims.append(p)
    return victims


def find_preemption(
    state: FastState, pod: Pod, rng: random.Random, protect_gangs: bool = False
) -> tuple[int, list[Pod]] | None:
    """The node and minimal victims that let `pod` fit, or None."""
    n = len(state.names)
    mask = state.eligible_mask(pod)
    constraint_ok = state.constraint_mask(pod)
    if constraint_ok is not None:
        mask = mask & constraint_ok
    nodes = np.flatnonzero(mask)
    if nodes.size == 0:
        return None
    wanted = min(n, max(n * MIN_CANDIDATE_NODES_PERCENTAGE // 100, MIN_CANDIDATE_NODES_ABSOLUTE))
    start = rng.randrange(nodes.size)
    best: tuple[tuple[int, int, int, int], int, list[Pod]] | None = None
    found = 0
    for k in range(nodes.size):
        node = int(nodes[(start + k) % nodes.size])
        victims = _victims_on(state, pod, node, protect_gangs)
        if victims is None:
            continue
        key = (
            max((v.tier for v in victims), default=-(2**31)),
            sum(v.tier + PRIORITY_OFFSET for v in victims),
            len(victims),
            k,
        )
        if best is None or key < best[0]:
            best = (key, node, victims)
        found += 1
        if found >= wanted:
            break
    return None if best is None else (best[1], best[2])
