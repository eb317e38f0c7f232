"""Faults under load (issue 10): a Mooncake trace at a steady rate through two router replicas,
one fault at a time; no client request may be lost.

Every streamed answer is compared with the exact text an unfaulted run produces (the simulated
engine's model is deterministic), so a stream cut by a dead engine passes only if the router's
slicing resumed it elsewhere from its last token without a gap or a repeat. Each test also asserts
that the fault really happened (live streams cut, a new revision, a drain, a new API server) and
that the system came back to full strength. Load phases are short here (`benchmarks/reliability`
runs the same faults for longer: `flotilla bench chaos`).
"""

from __future__ import annotations

import pytest

from flotilla.chaos.faults import FAULTS
from flotilla.chaos.rig import Rig
from flotilla.chaos.scenario import FaultResult, Phases, run_fault
from flotilla.chaos.workload import LoadSpec

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

LOAD = LoadSpec(rps=3.0, max_input_tokens=512, max_output_tokens=128)
PHASES = Phases(pre_s=3.0, post_s=3.0, recovery_timeout_s=90.0)


async def _run(rig: Rig, name: str) -> FaultResult:
    await rig.wait_serving(timeout_s=90)
    result = await run_fault(rig, FAULTS[name], LOAD, PHASES)
    s = result.summary
    detail = (
        f"{name}: {s} notes={result.notes} failovers={result.failovers} "
        f"refused_retried={result.refused_retried} recovery_s={result.recovery_s}"
    )
    assert s["sent"] >= 20, detail
    assert s["lost"] == 0, detail
    assert s["error_responses"] == 0, detail
    assert result.recovered_s is not None, f"never recovered: {detail}"
    return result


async def test_engine_killed_mid_stream(rig: Rig) -> None:
    result = await _run(rig, "engine-kill")
    assert result.notes["streams_cut"] >= 1
    assert result.failovers >= 1, "no stream was resumed on another instance"


async def test_pod_deleted(rig: Rig) -> None:
    result = await _run(rig, "pod-delete")
    assert result.notes["streams_cut"] >= 1


async def test_node_deleted(rig: Rig) -> None:
    result = await _run(rig, "node-delete")
    assert result.notes["pods"], "the deleted node held no fleet pod"


async def test_operator_restarted_mid_rollout(rig: Rig) -> None:
    result = await _run(rig, "operator-restart")
    assert len(result.notes["revisions_at_kill"]) == 2, "the operator was not killed mid-rollout"


async def test_router_replica_drained_and_restarted(rig: Rig) -> None:
    result = await _run(rig, "router-restart")
    assert result.notes["inflight_at_sigterm"] >= 1, "the drained replica held no request"


async def test_apiserver_restarted_watches_recover(rig: Rig) -> None:
    result = await _run(rig, "apiserver-restart")
    assert result.notes["new_pid"] != result.notes["old_pid"]
    assert result.notes["new_pod_requests"] > 0
