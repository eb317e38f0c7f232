"""`flotilla bench operator`: how fast the operator converges fleets, and what it costs the API.

On a local control plane with 128 KWOK GPU nodes, for 1, 10 and 100 fleets of 8 replicas each:
the time from creating the fleets to every fleet reporting Ready with all pods ready, the API
requests the operator made meanwhile (by verb), and its requests per minute at steady state
afterwards. The operator runs in-process so its request counters can be read; a watch-driven binder
in the benchmark stands in for the placement scheduler (its requests are not the operator's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flotilla.api import labels
from flotilla.api.crdgen import build_crd
from flotilla.operator.app import Runtime, run_operator
from flotilla.operator.config import LeaderConfig, OperatorConfig, RenderConfig
from flotilla.operator.kubeclient import FAILED_SUFFIX

REPLICAS = 8


@dataclass
class Scenario:
    fleets: int
    pod_event_delay_s: float = 0.0
    seconds_to_ready: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    reconciles: int = 0
    steady_requests_per_min: float = 0.0
    steady_lease_requests_per_min: float = 0.0
    steady_reconciles_per_min: float = 0.0


class Binder:
    """Binds unbound flotilla pods to nodes with free GPUs (first fit over a rotating start)."""

    def __init__(self, api: Any, nodes: dict[str, int]) -> None:
        self._api = api
        self.free = dict(nodes)
        self._order = sorted(nodes)
        self._next = 0
        self.bound: set[str] = set()

    async def run(self) -> None:
        from kubernetes_asyncio import watch
        from kubernetes_asyncio.client import CoreV1Api

        core = CoreV1Api(self._api)
        while True:
            async with watch.Watch() as w:
                stream = w.stream(
                    core.list_pod_for_all_namespaces,
                    label_selector=labels.LABEL_FLEET,
                    field_selector="spec.nodeName=",
                    timeout_seconds=300,
                )
                async for event in stream:
                    pod = event["object"]
                    if event["type"] != "DELETED" and pod.metadata.name not in self.bound:
                        await self._bind(core, pod)

    async def _bind(self, core: Any, pod: Any) -> None:
        for _ in range(len(self._order)):
            node = self._order[self._next % len(self._order)]
            self._next += 1
            if self.free[node] >= 1:
                break
        else:
            return
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.metadata.name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        with contextlib.suppress(Exception):
            await core.create_namespaced_pod_binding(
                pod.metadata.name, pod.metadata.namespace, body, _preload_content=False
            )
            self.free[node] -= 1
            self.bound.add(pod.metadata.name)


def _fleet(name: str) -> dict[str, Any]:
    return {
        "apiVersion": labels.API_VERSION,
        "kind": labels.KIND,
        "metadata": {"name": name},
        "spec": {"model": {"name": "bench", "source": "org/bench"}, "replicas": REPLICAS},
    }


async def _all_ready(custom: Any, namespace: str, count: int) -> bool:
    listed = await custom.list_namespaced_custom_object(
        labels.GROUP, labels.VERSION, namespace, labels.PLURAL
    )
    ready = 0
    for fleet in listed["items"]:
        status = fleet.get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
        ready += conds.get("Ready") == "True" and status.get("readyReplicas") == REPLICAS
    return ready == count


def _snapshot(rt: Runtime) -> tuple[Counter[str], int, int]:
    lease = rt.elector.requests if rt.elector is not None else 0
    return Counter(rt.writer.requests), lease, rt.reconciles


async def run_scenario(api: Any, rt: Runtime, count: int, steady_s: float, timeout_s: float) -> Scenario:
    from kubernetes_asyncio.client import CoreV1Api, CustomObjectsApi

    core, custom = CoreV1Api(api), CustomObjectsApi(api)
    namespace = f"bench-{count}"
    await core.create_namespace({"metadata": {"name": namespace}})  # type: ignore[arg-type]
    out = Scenario(fleets=count)
    before, _, rec_before = _snapshot(rt)
    start = time.monotonic()
    await asyncio.gather(
        *(
            custom.create_namespaced_custom_object(
                labels.GROUP, labels.VERSION, namespace, labels.PLURAL, _fleet(f"f{i}")
            )
            for i in range(count)
        )
    )
    while not await _all_ready(custom, namespace, count):
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{count} fleets not ready after {timeout_s} s")
        await asyncio.sleep(0.2)
    out.seconds_to_ready = time.monotonic() - start
    after, _, rec_after = _snapshot(rt)
    out.requests = dict(after - before)
    out.reconciles = rec_after - rec_before
    # Let the last status writes and events drain before the quiet period starts.
    await asyncio.sleep(5)
    quiet, lease_q, rec_q = _snapshot(rt)
    await asyncio.sleep(steady_s)
    end, lease_e, rec_e = _snapshot(rt)
    out.steady_requests_per_min = sum((end - quiet).values()) * 60 / steady_s
    out.steady_lease_requests_per_min = (lease_e - lease_q) * 60 / steady_s
    out.steady_reconciles_per_min = (rec_e - rec_q) * 60 / steady_s
    await core.delete_namespace(namespace)
    return out


async def bench(
    counts: list[int], nodes: int, *, steady_s: float, resync_s: float, delays: list[float], workdir: Path
) -> tuple[list[Scenario], dict[str, Any]]:
    """Every fleet count under every pod-event delay, one operator process per delay, one cluster."""
    from kubernetes_asyncio.client import ApiextensionsV1Api

    from flotilla.localcluster.binaries import ensure_binaries
    from flotilla.localcluster.controlplane import ClusterConfig, LocalCluster

    binaries = ensure_binaries(build=False)
    cluster = LocalCluster(
        ClusterConfig(name="flotilla-bench-operator", gpu_nodes=nodes, scheduler=False), workdir, binaries
    )
    results: list[Scenario] = []
    async with cluster, await cluster.api_client() as api:
        await ApiextensionsV1Api(api).create_custom_resource_definition(build_crd())  # type: ignore[arg-type]
        await asyncio.sleep(3)  # let the CRD become Established and discoverable
        binder = Binder(api, {f"gpu-node-{i}": 8 for i in range(nodes)})
        binding = asyncio.create_task(binder.run())
        try:
            for delay in delays:
                config = OperatorConfig(
                    kubeconfig=cluster.kubeconfig,
                    resync_s=resync_s,
                    pod_event_delay_s=delay,
                    render=RenderConfig(tolerate_kwok=True),
                    leader=LeaderConfig(namespace="default"),
                )
                async with _operator(config) as rt:
                    for count in counts:
                        scenario = await run_scenario(api, rt, count, steady_s, timeout_s=600)
                        scenario.pod_event_delay_s = delay
                        results.append(scenario)
                        # The next scenario starts on an empty cluster: namespace, fleets, pods gone.
                        await _wait_gone(api, f"bench-{count}")
                        binder.free = {f"gpu-node-{i}": 8 for i in range(nodes)}
        finally:
            binding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await binding
    meta = {"nodes": nodes, "replicas_per_fleet": REPLICAS, "steady_s": steady_s, "resync_s": resync_s}
    return results, meta


@contextlib.asynccontextmanager
async def _operator(config: OperatorConfig) -> AsyncIterator[Runtime]:
    runtimes: list[Runtime] = []
    started = asyncio.Event()
    stop = asyncio.Event()

    def on_start(rt: Runtime) -> None:
        runtimes.append(rt)
        started.set()

    task = asyncio.create_task(run_operator(config, stop, on_start=on_start))
    try:
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.sleep(2)  # primed and watching
        yield runtimes[0]
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 60)


async def _wait_gone(api: Any, namespace: str, timeout_s: float = 300) -> None:
    from kubernetes_asyncio.client import CoreV1Api
    from kubernetes_asyncio.client.exceptions import ApiException

    core = CoreV1Api(api)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        await asyncio.sleep(1)
    raise TimeoutError(f"namespace {namespace} was not deleted")


def write_report(results: list[Scenario], meta: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps({"meta": meta, "scenarios": [s.__dict__ for s in results]}, indent=2) + "\n"
    )
    lines = [
        "# Operator benchmark results",
        "",
        f"{meta['nodes']} KWOK nodes x 8 GPUs, fleets of {meta['replicas_per_fleet']} replicas x 1 GPU, "
        f"resync every {meta['resync_s']:.0f} s, steady state measured over {meta['steady_s']:.0f} s. "
        "Requests are the operator's own (pods, status, events, node checks; the Lease counted apart). "
        "`delay` is the pod-event delay that batches a fleet's pod events into one reconcile; the ratio "
        "columns compare each row with the same fleet count at the first delay of the run.",
        "",
        "| delay (s) | fleets | pods | apply -> all Ready (s) | time ratio | operator requests "
        "| requests ratio | requests per pod | reconciles | steady requests/min | steady Lease requests/min "
        "| steady reconciles/min |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base: dict[int, Scenario] = {}
    for s in results:
        base.setdefault(s.fleets, s)
    for s in results:
        pods = s.fleets * meta["replicas_per_fleet"]
        total = sum(v for k, v in s.requests.items() if not k.endswith(FAILED_SUFFIX))
        ref = base[s.fleets]
        ref_total = sum(v for k, v in ref.requests.items() if not k.endswith(FAILED_SUFFIX)) or 1
        lines.append(
            f"| {s.pod_event_delay_s:g} | {s.fleets} | {pods} | {s.seconds_to_ready:.2f} "
            f"| {s.seconds_to_ready / ref.seconds_to_ready:.2f} | {total} | {total / ref_total:.2f} "
            f"| {total / pods:.2f} | {s.reconciles} | {s.steady_requests_per_min:.1f} "
            f"| {s.steady_lease_requests_per_min:.1f} | {s.steady_reconciles_per_min:.1f} |"
        )
    lines += ["", "Requests by verb while converging:", ""]
    for s in results:
        verbs = ", ".join(f"{k} {v}" for k, v in sorted(s.requests.items()))
        lines.append(f"- delay {s.pod_event_delay_s:g} s, {s.fleets} fleets: {verbs}")
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    _plot(results, meta, out_dir / "results.png")


def _plot(results: list[Scenario], meta: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for delay in sorted({s.pod_event_delay_s for s in results}):
        rows = [s for s in results if s.pod_event_delay_s == delay]
        fleets = [s.fleets for s in rows]
        label = f"pod-event delay {delay:g} s"
        left.plot(fleets, [s.seconds_to_ready for s in rows], marker="o", label=label)
        right.plot(fleets, [sum(s.requests.values()) for s in rows], marker="o", label=label)
    left.set(
        xscale="log", xlabel="fleets (8 replicas each)", ylabel="apply -> all Ready (s)", title="Convergence"
    )
    right.set(xscale="log", yscale="log", xlabel="fleets", ylabel="operator API requests", title="API cost")
    left.legend()
    right.legend()
    fig.suptitle(f"flotilla operator on {meta['nodes']} KWOK nodes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
