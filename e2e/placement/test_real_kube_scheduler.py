"""The gap the solver closes, shown on the REAL kube-scheduler: it strands the GPUs a TP=8 needs.

Two empty 8-GPU nodes, eight TP=1 replicas arriving before one TP=8 replica, all the same tier:
kube-scheduler's LeastAllocated scoring spreads the small ones 4 + 4 and the TP=8 stays pending; the
solver packs the small ones onto one node and places all nine.
"""

from __future__ import annotations

from typing import Any

import pytest

from flotilla.localcluster.controlplane import LocalCluster
from flotilla.placement.bench.kwokreplay import ensure_priority_classes, replay
from flotilla.placement.cpsat.solver import solve
from flotilla.placement.examples import gpu_node, tp_pod
from flotilla.placement.rules.metrics import evaluate
from flotilla.placement.types.plan import Status
from flotilla.placement.types.snapshot import Snapshot

pytestmark = pytest.mark.e2e


async def test_real_kube_scheduler_strands_a_tp8_that_the_solver_places(
    cluster: LocalCluster, kube_scheduler: Any
) -> None:
    pods = (*(tp_pod(f"small-{i}", 1, fleet="small") for i in range(8)), tp_pod("big", 8, fleet="big"))
    snap = Snapshot(nodes=(gpu_node("a"), gpu_node("b")), pending=pods)
    await ensure_priority_classes(cluster)
    real = await replay(cluster, snap, settle_s=5.0)
    assert real.unplaced == ("big",)
    assert evaluate(snap, real).stranded_gpus == 8
    ours = solve(snap, 1.0)
    assert ours.status is Status.OPTIMAL and ours.unplaced == ()
