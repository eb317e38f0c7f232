"""`flotilla bench chaos`: every fault, one at a time, with longer load phases than the e2e tests,
on a local cluster of its own; writes benchmarks/reliability/{chaos.md,chaos.png,chaos.json}."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flotilla.chaos.faults import FAULTS
from flotilla.chaos.report import write_all
from flotilla.chaos.rig import Rig, RigSpec
from flotilla.chaos.scenario import Phases, run_fault
from flotilla.chaos.workload import LoadSpec
from flotilla.localcluster.binaries import ensure_binaries
from flotilla.localcluster.controlplane import ClusterConfig, LocalCluster
from flotilla.localcluster.nodeops import wait_default_service_account
from flotilla.localcluster.session import default_run_dir

NAMESPACE = "chaos"


async def run_chaos(
    out: Path,
    *,
    faults: Sequence[str] = tuple(FAULTS),
    load: LoadSpec | None = None,
    phases: Phases | None = None,
    rig_spec: RigSpec | None = None,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    load = load or LoadSpec(rps=4.0, max_input_tokens=1024, max_output_tokens=256)
    phases = phases or Phases(pre_s=15.0, post_s=20.0, recovery_timeout_s=120.0)
    rig_spec = rig_spec or RigSpec()
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: {list(FAULTS)}")
    run_dir = default_run_dir("flotilla-chaos")
    await asyncio.to_thread(shutil.rmtree, run_dir, True)
    binaries = await asyncio.to_thread(ensure_binaries, build=False)
    cluster = LocalCluster(
        ClusterConfig(name="flotilla-chaos", gpu_nodes=0, scheduler=False), run_dir, binaries
    )
    results: list[dict[str, Any]] = []
    say(f"starting a local cluster in {run_dir} ...")
    async with cluster:
        from kubernetes_asyncio.client import CoreV1Api

        async with await cluster.api_client() as api:
            core: Any = CoreV1Api(api)
            await core.create_namespace(body={"metadata": {"name": NAMESPACE}})
            await wait_default_service_account(api, NAMESPACE, timeout_s=60)
        rig = Rig(cluster, NAMESPACE, rig_spec)
        try:
            await rig.start()
            for name in faults:
                await rig.wait_serving(timeout_s=120)
                say(f"{name}: {FAULTS[name].what} ...")
                result = (await run_fault(rig, FAULTS[name], load, phases)).as_dict()
                s = result["summary"]
                say(
                    f"  sent {s['sent']}, lost {s['lost']}, errors {s['error_responses']}, "
                    f"recovery {result['recovery_s']}"
                )
                results.append(result)
        finally:
            await rig.stop()
    setup = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} Linux, {os.cpu_count()} cores (shared)",
        "command": "flotilla bench chaos",
        "load": (
            f"{load.trace.name}, the first requests with arrivals stretched to {load.rps:g} req/s "
            f"(bursts kept), prompts cut at {load.max_input_tokens} tokens, outputs at "
            f"{load.max_output_tokens} (ignore_eos, temperature 0, streamed /v1/completions); "
            f"{phases.pre_s:g} s before the fault, {phases.post_s:g} s after full recovery"
        ),
        "system": (
            f"local control plane (etcd, kube-apiserver, kube-controller-manager, KWOK), "
            f"{rig_spec.nodes} fake 8-GPU nodes, `flotilla operator run`, {rig_spec.routers} "
            f"`flotilla router run` replicas (Kubernetes discovery, least_request, drain "
            f"{rig_spec.router_drain_s:g} s), one fleet of {rig_spec.replicas} replicas with "
            f"sliceTokens {rig_spec.slice_tokens}, one flotilla.enginesim process per pod"
        ),
        "load_spec": {**asdict(load), "trace": str(load.trace)},
        "phases": asdict(phases),
        "rig": asdict(rig_spec),
    }
    paths = await asyncio.to_thread(write_all, out, results, setup)
    say("wrote " + ", ".join(str(p) for p in paths))
    await asyncio.to_thread(shutil.rmtree, run_dir, True)
    return results
