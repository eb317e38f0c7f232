"""A faithful re-implementation of kube-scheduler's default profile, the baseline we must beat.

Pods are taken one at a time in priority order (then arrival order). Filter: NodeResourcesFit (all
requested resources, GPUs included), TaintToleration, NodeSelector, readiness, and our hard spread
cap (standing in for PodTopologySpread). Only the first `numFeasibleNodesToFind` feasible nodes are
scored, searching from a rotating start index (percentageOfNodesToScore's adaptive default). Score:
NodeResourcesFit LeastAllocated over cpu and memory (weight 1 each) plus NodeResourcesBalancedAllocation
over cpu and memory, both plugins at weight 1; ties broken at random. Extended resources such as
nvidia.com/gpu are filtered but not scored by default, which is why the default spreads small GPU pods
over many nodes and strands the GPUs a TP=8 replica needs. When nothing fits, DefaultPreemption
(`placement.preemption`) evicts the minimal set of lower-priority victims on one node. Plugins that
score all our nodes alike (TaintToleration without PreferNoSchedule taints, ImageLocality, affinity)
are left out; gangs are unknown to kube-scheduler, so it binds their pods one by one.
"""

from __future__ import annotations

import random
import time

import numpy as np

from flotilla.placement.heuristics.preemption import find_preemption
from flotilla.placement.rules.faststate import FastState
from flotilla.placement.types.plan import Plan, Status
from flotilla.placement.types.planbuild import plan_from_assignment
from flotilla.placement.types.snapshot import Pod, Snapshot

MAX_NODE_SCORE = 100
CPU, MEM = 1, 2


def num_feasible_nodes_to_find(num_nodes: int) -> int:
    """kube-scheduler's adaptive percentageOfNodesToScore (minimum 100 nodes, 5 %)."""
    if num_nodes < 100:
        return num_nodes
    percentage = max(5, 50 - num_nodes // 125)
    return max(100, num_nodes * percentage // 100)


def scores(state: FastState, pod: Pod, nodes: np.ndarray) -> np.ndarray:
    alloc = state.alloc[nodes][:, [CPU, MEM]].astype(np.float64)
    used = (state.alloc[nodes] - state.free[nodes])[:, [CPU, MEM]].astype(np.float64)
    requested = used + np.array([pod.requests.cpu_m, pod.requests.mem_mi], dtype=np.float64)
    safe = np.maximum(alloc, 1.0)
    # LeastAllocated: mean over resources of free share after placing, in 0..100 (integer, as kube)
    least = np.where(alloc > 0, np.floor((alloc - requested) * MAX_NODE_SCORE / safe), 0)
    least_score = np.floor(least.sum(axis=1) / 2)
    # BalancedAllocation: 1 - standard deviation of the requested fractions, in 0..100
    fractions = np.minimum(requested / safe, 1.0)
    std = np.abs(fractions[:, 0] - fractions[:, 1]) / 2
    balanced = np.floor((1 - std) * MAX_NODE_SCORE)
    result: np.ndarray = least_score + balanced
    return result


def schedule_default(snapshot: Snapshot, seed: int = 0) -> Plan:
    started = time.perf_counter()
    rng = random.Random(seed)
    state = FastState(snapshot)
    n = len(state.names)
    to_find = num_feasible_nodes_to_find(n)
    next_start = 0
    order = sorted(range(len(snapshot.pending)), key=lambda i: (-snapshot.pending[i].tier, i))
    for i in order:
        pod = snapshot.pending[i]
        mask = state.fit_mask(pod)
        rotated = np.roll(np.arange(n), -next_start) if n else np.arange(0)
        feasible = rotated[mask[rotated]][:to_find]
        if feasible.size:
            # nodes examined until enough feasible ones were found advance the start index
            last = int(np.flatnonzero(rotated == feasible[-1])[0]) if feasible.size == to_find else n - 1
            next_start = (next_start + last + 1) % n
            s = scores(state, pod, feasible)
            best = np.flatnonzero(s == s.max())
            state.place(pod, int(feasible[best[rng.randrange(best.size)]]))
            continue
        found = find_preemption(state, pod, rng)
        if found is not None:
            node, victims = found
            for v in victims:
                state.remove(v)
            state.place(pod, node)
    return plan_from_assignment(
        snapshot,
        state.assignment(),
        status=Status.HEURISTIC,
        approach="kube-default",
        seconds=time.perf_counter() - started,
    )
