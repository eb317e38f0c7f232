"""Fixtures for placement e2e tests with the operator: the placement loop, and the operator's fixtures.

- `placement`: the placement loop running in the test's process (2 CP-SAT workers: the machine is
  shared), stopped afterwards; yields its `PlacementMetrics`.
- `fleet_pod`: `fleet_pod(name, fleet, gpus, tier, node_selector)`, the manifest of a bare fleet
  pod for flotilla's scheduler, kept to the nodes `node_selector` picks (a test's own nodes).
- `crd`, `operator`, `operator_factory`, `fleets`: reused from e2e/operator/conftest.py. A conftest's
  fixtures only reach tests below its folder, and test folders are not packages, so they are loaded
  from their file and re-exported here rather than copied: the placement tests run the operator
  exactly as the operator's tests do.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from flotilla.api import labels
from flotilla.localcluster.nodes import KWOK_TOLERATION
from flotilla.placement.kube.clusterapi import KubeClusterApi
from flotilla.placement.kube.loop import LoopConfig, PlacementLoop
from flotilla.placement.kube.telemetry import PlacementMetrics


def _operator_fixtures() -> ModuleType:
    name = "flotilla_e2e_operator_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent.parent / "operator" / "conftest.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_op = _operator_fixtures()
crd = _op.crd
operator_factory = _op.operator_factory
operator = _op.operator
fleets = _op.fleets


@pytest.fixture
async def placement(api: Any) -> AsyncIterator[PlacementMetrics]:
    """The placement loop in this process (2 workers: the machine is shared), with its metrics."""
    metrics = PlacementMetrics(CollectorRegistry())
    config = LoopConfig(budget_s=1.0, batch_window_s=0.2, resync_s=0.5, workers=2)
    loop = PlacementLoop(KubeClusterApi(api), config, metrics=metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    yield metrics
    stop.set()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(task, 15)


def _fleet_pod(name: str, fleet: str, gpus: int, tier: int, node_selector: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                labels.LABEL_FLEET: fleet,
                labels.LABEL_TIER: str(tier),
                labels.LABEL_MANAGED_BY: labels.MANAGED_BY,
            },
        },
        "spec": {
            "schedulerName": labels.SCHEDULER_NAME,
            "nodeSelector": node_selector,
            "tolerations": [KWOK_TOLERATION],
            "containers": [
                {
                    "name": "engine",
                    "image": "engine",
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi", labels.GPU_RESOURCE: str(gpus)},
                        "limits": {labels.GPU_RESOURCE: str(gpus)},
                    },
                }
            ],
        },
    }


@pytest.fixture
def fleet_pod() -> Callable[[str, str, int, int, dict[str, str]], dict[str, Any]]:
    """The manifest of a bare fleet pod for flotilla's scheduler, on the nodes a selector picks."""
    return _fleet_pod
