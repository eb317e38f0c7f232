"""The six faults of issue 10, each injected into a serving `Rig` while the load runs.

A fault's `inject` breaks something and returns notes (what it hit); its `recovered` says when the
system is back at full strength (`Rig.serving`, plus the fault's own proof, e.g. the new instance
after an API server restart gets traffic); `cleanup` puts the rig back for the next fault, outside
the measured window.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from flotilla.api import labels
from flotilla.chaos.rig import Rig
from flotilla.localcluster.readiness import wait_until


async def _busiest_pod(rig: Rig, *, timeout_s: float = 20.0) -> tuple[str, float]:
    """The live pod whose engine generates the most requests now, and how many; waits (bounded)
    for one that generates any, so that the fault cuts live streams (the trace has lulls)."""
    deadline = time.monotonic() + timeout_s
    while True:
        live = {p["metadata"]["name"] for p in await rig.pods()}
        running = {k: v for k, v in (await rig.engine_running_requests()).items() if k in live}
        if not running:
            raise RuntimeError("no engine answered its metrics")
        pod = max(running, key=lambda name: (running[name], name))
        if running[pod] > 0 or time.monotonic() > deadline:
            return pod, running[pod]
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    inject: Callable[[Rig], Awaitable[dict[str, Any]]]
    recovered: Callable[[Rig, dict[str, Any]], Awaitable[bool]]
    cleanup: Callable[[Rig, dict[str, Any]], Awaitable[None]] | None = None


async def _serving(rig: Rig, notes: dict[str, Any]) -> bool:
    return await rig.serving()


# --- 1. an engine process killed mid-stream ------------------------------------------------------
async def kill_engine(rig: Rig) -> dict[str, Any]:
    pod, running = await _busiest_pod(rig)
    os.killpg(rig.engine_of(pod).pid, signal.SIGKILL)
    return {"pod": pod, "streams_cut": running}


# --- 2. a pod deleted ----------------------------------------------------------------------------
async def delete_pod(rig: Rig) -> dict[str, Any]:
    from kubernetes_asyncio.client import CoreV1Api

    pod, running = await _busiest_pod(rig)
    await CoreV1Api(rig.api).delete_namespaced_pod(pod, rig.namespace)
    return {"pod": pod, "streams_cut": running}


# --- 3. a node deleted (its machine gone: the engines on it die with it) ----------------------------
async def delete_node(rig: Rig) -> dict[str, Any]:
    from kubernetes_asyncio.client import CoreV1Api

    pod, _ = await _busiest_pod(rig)
    node_of = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in await rig.pods()}
    running = await rig.engine_running_requests()
    node = node_of[pod]
    victims = [name for name, on in node_of.items() if on == node]
    await CoreV1Api(rig.api).delete_node(node)
    for name in victims:
        rig.no_restart.add(rig.engine_key(name))
        os.killpg(rig.engine_of(name).pid, signal.SIGKILL)
    rig.node_names.remove(node)
    return {
        "node": node,
        "pods": victims,
        "streams_cut": sum(running.get(v, 0.0) for v in victims),
        "_t0": time.monotonic(),
    }


async def _pods_replaced_and_serving(rig: Rig, notes: dict[str, Any]) -> bool:
    """Full strength; on the way, note when the operator removed the lost node's pods."""
    if "pods_removed_after_s" not in notes:
        live = {p["metadata"]["name"] for p in await rig.pods()}
        if live.isdisjoint(notes["pods"]):
            notes["pods_removed_after_s"] = round(time.monotonic() - notes["_t0"], 2)
    return await rig.serving()


async def _replace_node(rig: Rig, notes: dict[str, Any]) -> None:
    await rig.add_node()


# --- 4. the operator killed in the middle of a rolling update --------------------------------------
async def restart_operator_mid_rollout(rig: Rig) -> dict[str, Any]:
    before = {p["metadata"]["labels"].get(labels.LABEL_REVISION) for p in await rig.pods()}
    # An engine env change is in the pod spec, so it is rolled out (annotations are patched in place).
    env = [{"name": "FLOTILLA_CHAOS_ROLLOUT", "value": str(time.time_ns())}]
    await rig.patch_fleet({"engine": {"env": env}})

    async def rolling() -> bool:
        revisions = {p["metadata"]["labels"].get(labels.LABEL_REVISION) for p in await rig.pods()}
        return bool(revisions - before)

    await wait_until(rolling, timeout_s=30.0, what="the rollout's first new pod", interval_s=0.05)
    assert rig.operator is not None
    starts = rig.operator_starts
    os.killpg(rig.operator.pid, signal.SIGKILL)

    async def restarted() -> bool:  # by the rig's stand-in Deployment
        return rig.operator_starts > starts

    await wait_until(restarted, timeout_s=30.0, what="the operator's restart")
    pods = await rig.pods()
    revisions = sorted({p["metadata"]["labels"].get(labels.LABEL_REVISION, "") for p in pods})
    return {"revisions_at_kill": revisions, "pods_at_kill": len(pods)}


# --- 5. a router replica restarted with a graceful drain ------------------------------------------
async def restart_router(rig: Rig) -> dict[str, Any]:
    # SIGTERM while the replica holds streams, so that the drain has something to finish.
    deadline = time.monotonic() + 20.0
    while True:
        inflight = await rig.router_counter("flotilla_router_inflight_requests", routers=rig.routers[:1])
        if inflight > 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    drained_s = await rig.restart_router(0)
    return {"router": rig.routers[0].url, "drain_s": round(drained_s, 2), "inflight_at_sigterm": inflight}


# --- 6. kube-apiserver restarted; then a scale-up must be reconciled and routed to ------------------
async def restart_apiserver(rig: Rig) -> dict[str, Any]:
    old = rig.cluster.processes["kube-apiserver"].pid
    exits = rig.operator_exits
    down_s = await rig.cluster.restart_apiserver(down_s=2.0)
    before = {p["metadata"]["name"] for p in await rig.pods()}
    await rig.patch_fleet({"replicas": rig.spec.replicas + 1})
    return {
        "old_pid": old,
        "new_pid": rig.cluster.processes["kube-apiserver"].pid,
        "down_s": round(down_s, 2),
        "operator_exits_before": exits,
        "pods_before_scale_up": sorted(before),
    }


async def _scaled_and_routed(rig: Rig, notes: dict[str, Any]) -> bool:
    if not await rig.serving(rig.spec.replicas + 1):
        return False
    new = [
        p["metadata"]["name"]
        for p in await rig.pods()
        if p["metadata"]["name"] not in notes["pods_before_scale_up"]
    ]
    if not new:
        return False
    finished = await rig.engine_finished(new[0])
    notes["new_pod"], notes["new_pod_requests"] = new[0], finished
    notes["operator_exits"] = rig.operator_exits - notes["operator_exits_before"]
    return finished > 0


async def _scale_back(rig: Rig, notes: dict[str, Any]) -> None:
    await rig.patch_fleet({"replicas": rig.spec.replicas})
    await rig.wait_serving()


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault(
            "engine-kill", "SIGKILL the engine process with the most running requests", kill_engine, _serving
        ),
        Fault("pod-delete", "delete the pod with the most running requests", delete_pod, _serving),
        Fault(
            "node-delete",
            "delete the busiest pod's Node and kill the engines on it (machine lost)",
            delete_node,
            _pods_replaced_and_serving,
            _replace_node,
        ),
        Fault(
            "operator-restart",
            "SIGKILL the operator mid-rollout (engine env changed); restarted 1 s after it died",
            restart_operator_mid_rollout,
            _serving,
        ),
        Fault(
            "router-restart",
            "SIGTERM one of 2 router replicas (graceful drain), start it again on the same port",
            restart_router,
            _serving,
        ),
        Fault(
            "apiserver-restart",
            "stop kube-apiserver, start it 2 s later on the same port; then scale the fleet up by 1",
            restart_apiserver,
            _scaled_and_routed,
            _scale_back,
        ),
    )
}
