"""The router's admission in front of one instance with one slot, on a clock the test moves."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from flotilla.router.admission import Admission, queue_factory
from flotilla.router.instances import InstanceSpec, InstanceTable
from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies import default_registry
from flotilla.router.policy_book import PolicyBook


class ManualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def one_slot_admission(
    clock: ManualClock,
    order: str,
    params: Mapping[str, Any] | None = None,
    *,
    max_queue: int = 100,
    max_wait_s: float = 60.0,
) -> Admission:
    """Model `m` on instance `i0`, which holds one request: everything else waits in `order`."""
    table = InstanceTable(default_max_inflight=1)
    table.update([InstanceSpec(id="i0", url="http://x0", model="m")])
    return Admission(
        table,
        PolicyBook(default_registry(), "least_request", {}),
        RouterMetrics(CollectorRegistry()),
        rng=random.Random(0),
        queue_factory=queue_factory(order, params),
        max_queue=max_queue,
        max_wait_s=max_wait_s,
        clock=clock,
    )
