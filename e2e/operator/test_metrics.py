"""The operator's /metrics on a real control plane: a fleet's reconciles, replicas and API requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flotilla.localcluster.ports import free_port
from flotilla.localcluster.readiness import wait_until

pytestmark = pytest.mark.e2e


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_follow_a_fleet(
    operator_factory: Callable[[str], Any], binder: Any, fleets: Any, namespace: str
) -> None:
    port = free_port()
    operator = operator_factory("op")
    operator.extra = [f"--metrics-port={port}", "--metrics-host=127.0.0.1"]
    operator.start()
    await fleets.create(fleets.manifest("watched", 2))
    await fleets.wait_ready("watched", 2)
    fleet = (("fleet", "watched"), ("namespace", namespace))
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    async def status_reported() -> bool:
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        seen.clear()
        seen.update(_samples(resp.text))
        return seen.get(("flotilla_operator_fleet_ready_replicas", fleet)) == 2

    await wait_until(status_reported, timeout_s=30, what="readyReplicas 2 in /metrics")
    assert seen[("flotilla_operator_fleet_desired_replicas", fleet)] == 2
    assert seen[("flotilla_operator_leader", ())] == 1
    assert seen[("flotilla_operator_fleets", ())] == 1
    assert seen[("flotilla_operator_reconciles_total", (("result", "success"),))] >= 2
    assert seen[("flotilla_operator_reconcile_duration_seconds_count", ())] >= 2
    creates = (("resource", "pods"), ("verb", "create"))
    assert seen[("flotilla_operator_api_requests_total", creates)] >= 2
    assert (
        seen[("flotilla_operator_api_requests_total", (("resource", "leases"), ("verb", "get_or_update")))]
        >= 1
    )
