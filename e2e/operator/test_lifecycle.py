"""The operator on a real control plane: create, scale, replace, garbage-collect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flotilla.api import labels
from flotilla.localcluster.kubectl import Kubectl
from flotilla.localcluster.readiness import wait_until

pytestmark = pytest.mark.e2e


def _indices(pods: list[Any]) -> list[int]:
    return sorted(int(p.metadata.labels[labels.LABEL_REPLICA]) for p in pods)


async def test_fleet_lifecycle(
    operator: Any, binder: Any, fleets: Any, kubectl: Kubectl, namespace: str
) -> None:
    await fleets.create(fleets.manifest("llama", 3, maxReplicas=8))
    pods = await fleets.wait_ready("llama", 3)
    assert _indices(pods) == [0, 1, 2]
    pod = pods[0]
    assert pod.spec.scheduler_name == "flotilla"
    assert pod.metadata.owner_references[0].kind == "InferenceFleet"
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    fleet = await fleets.get("llama")
    status = fleet["status"]
    assert status["selector"] == "flotilla.dev/fleet=llama"
    assert sorted(i["index"] for i in status["instances"]) == [0, 1, 2]
    assert all(i["node"] in binder.nodes and i["address"].endswith(":8000") for i in status["instances"])
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["Progressing"]["status"] == "False"
    assert conds["Degraded"]["status"] == "False"

    # kubectl scale goes through the scale subresource; pods follow both ways.
    k = kubectl.in_namespace(namespace)
    k("scale", "fleet/llama", "--replicas=5")
    assert _indices(await fleets.wait_ready("llama", 5)) == [0, 1, 2, 3, 4]
    k("scale", "fleet/llama", "--replicas=2")
    assert _indices(await fleets.wait_ready("llama", 2)) == [0, 1], "highest indices go first"

    # A deleted pod is replaced in its slot.
    victim = (await fleets.pods("llama"))[0]
    k("delete", "pod", victim.metadata.name, "--wait=false")
    pods = await fleets.wait_ready("llama", 2)
    assert victim.metadata.name not in {p.metadata.name for p in pods}
    assert _indices(pods) == [0, 1]

    # The operator says what it did.
    events = k("get", "events", "--field-selector=involvedObject.kind=InferenceFleet", "-o", "name")
    reasons = k(
        "get", "events", "--field-selector=involvedObject.name=llama", "-o", "jsonpath={.items[*].reason}"
    ).split()
    assert events and "SuccessfulCreate" in reasons and "SuccessfulDelete" in reasons

    # Deleting the fleet garbage-collects its pods (owner references).
    await fleets.delete("llama")

    async def gone() -> bool:
        return not await fleets.pods("llama", include_deleting=True)

    await wait_until(gone, timeout_s=60, what="pods garbage-collected")


async def test_restarted_operator_changes_nothing(operator: Any, binder: Any, fleets: Any) -> None:
    await fleets.create(fleets.manifest("steady", 3))
    before = {p.metadata.name for p in await fleets.wait_ready("steady", 3)}
    await asyncio.sleep(3)  # let the status settle (Progressing flips after the last pod turns ready)
    settled = await fleets.get("steady")
    operator.stop()
    operator.start()
    # Give the new process time to list, reconcile and resync at least twice (resync=2 s).
    await asyncio.sleep(8)
    assert operator.alive()
    after = {p.metadata.name for p in await fleets.wait_ready("steady", 3)}
    assert after == before
    now = await fleets.get("steady")
    assert now["status"] == settled["status"]
    assert now["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"], "nothing rewritten"


async def test_refused_router_params_show_in_describe(
    operator: Any, binder: Any, fleets: Any, kubectl: Kubectl, namespace: str
) -> None:
    """Params the policy's own model refuses (the CRD cannot check them) are named on the fleet:
    condition RoutingAccepted=False and a Warning Event, both in `kubectl describe fleet`."""
    router = {"policy": "prefix_affinity", "params": {"load_factor": 0.5, "no_such_param": 1}}
    await fleets.create(fleets.manifest("misrouted", 1, router=router))
    k = kubectl.in_namespace(namespace)

    async def routing_accepted() -> str | None:
        status = (await fleets.get("misrouted")).get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return conds.get("RoutingAccepted")

    async def refused() -> bool:
        return await routing_accepted() == "False"

    await wait_until(refused, timeout_s=30, what="RoutingAccepted=False")
    described = k("describe", "fleet", "misrouted")
    assert "InvalidRouterParams" in described
    assert "spec.router.params: load_factor: Input should be greater than 1" in described
    assert "no_such_param: Extra inputs are not permitted" in described
    warnings = k(
        "get",
        "events",
        "--field-selector=involvedObject.name=misrouted,type=Warning",
        "-o",
        "jsonpath={.items[*].reason}",
    ).split()
    assert warnings == ["InvalidRouterParams"], "one Event per refusal, not one per reconcile"

    # A merge patch: null removes the unknown key.
    fixed = {"load_factor": 2, "no_such_param": None}
    await fleets.patch_spec("misrouted", {"router": {"policy": "prefix_affinity", "params": fixed}})

    async def accepted() -> bool:
        return await routing_accepted() == "True"

    await wait_until(accepted, timeout_s=30, what="RoutingAccepted=True after the fix")
