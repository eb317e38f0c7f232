"""A pack fleet applied through the operator lands on one node: the local demo's batch-mistral bug.

The operator creates the replicas one by one, so they may reach the placement loop in separate
batches; pack must still put the second replica beside the first, not on another empty node.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flotilla.placement.kube.telemetry import PlacementMetrics

pytestmark = pytest.mark.e2e

POOL = "flotilla.dev/e2e-pool"


async def test_pack_fleet_replicas_share_one_node(
    operator: Any, placement: PlacementMetrics, fleets: Any, gpu_nodes: Callable[..., Awaitable[list[str]]]
) -> None:
    pool = uuid.uuid4().hex[:8]
    nodes = await gpu_nodes(2, labels={POOL: pool})
    spec = {"resources": {"gpus": 2}, "nodeSelector": {POOL: pool}, "placement": {"strategy": "pack"}}
    await fleets.create(fleets.manifest("packed", 2, **spec))
    pods = await fleets.wait_ready("packed", 2, timeout_s=120)
    (node,) = {p.spec.node_name for p in pods}
    assert node in nodes
    assert (placement.registry.get_sample_value("flotilla_placement_bindings_total") or 0) >= 2
