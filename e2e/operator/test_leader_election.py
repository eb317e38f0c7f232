"""Two operator replicas: one leads (holds the Lease) and acts, the other stands by and takes over
when the leader dies; the fleet never gets duplicate pods."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import pytest

from flotilla.localcluster.readiness import wait_until

pytestmark = pytest.mark.e2e


async def test_standby_takes_over_from_a_dead_leader(
    operator_factory: Callable[[str], Any], binder: Any, fleets: Any, api: Any, namespace: str
) -> None:
    from kubernetes_asyncio.client import CoordinationV1Api

    leases = CoordinationV1Api(api)
    first, second = operator_factory("alpha"), operator_factory("beta")
    first.start()

    async def holder() -> str | None:
        try:
            lease = await leases.read_namespaced_lease("flotilla-operator", namespace)
        except Exception:
            return None
        return lease.spec.holder_identity

    async def alpha_leads() -> bool:
        return (await holder() or "").startswith("alpha")

    await wait_until(alpha_leads, timeout_s=30, what="alpha to take the lease")
    second.start()
    await fleets.create(fleets.manifest("ha", 3))
    await fleets.wait_ready("ha", 3)
    await asyncio.sleep(2)
    assert (await holder() or "").startswith("alpha"), "the standby does not steal a renewed lease"
    assert len(await fleets.pods("ha")) == 3
    assert "holds lease" not in second.logs()

    first.stop(signal.SIGKILL)

    async def beta_leads() -> bool:
        return (await holder() or "").startswith("beta")

    await wait_until(beta_leads, timeout_s=30, what="beta to take over the expired lease")
    await fleets.patch_spec("ha", {"replicas": 4})
    pods = await fleets.wait_ready("ha", 4)
    assert len({p.metadata.name for p in pods}) == 4
