"""Soak: steady load through the router to engines with the operator working; memory stays flat.

The whole demo system runs (its own control plane, operator, placement, router, engines; the
`flotilla.localcluster.demo` steps), the Mooncake trace is replayed through the router for
FLOTILLA_SOAK_S seconds (90 in `make test`, 600 in `make soak`), and a fleet without traffic is
scaled up and down meanwhile so the operator reconciles, creates and deletes all along. The
router's and the operator's RSS, fds and threads are read from /proc every few seconds; after
warm-up the RSS trend must stay under a bound that a real leak would cross (see `_bounds`), and
after the load the router holds no more fds or threads than before it.

With FLOTILLA_SOAK_REPORT=<dir> the run writes soak.md and soak.png there (`make soak`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import io
import os
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from flotilla.api import labels
from flotilla.localcluster import demo_steps
from flotilla.localcluster.binaries import BinariesMissing, ensure_binaries, find_repo_root
from flotilla.localcluster.controlplane import ClusterConfig
from flotilla.localcluster.demo import DemoContext, DemoOptions, demo
from flotilla.localcluster.readiness import wait_until

SOAK_S = float(os.environ.get("FLOTILLA_SOAK_S", "90"))
PERIOD_S = float(os.environ.get("FLOTILLA_SOAK_SAMPLE_S", "2"))
# Long enough for imports, pools and the allocator's arenas to settle; at least a third of the run
# stays for the trend.
WARMUP_S = min(max(30.0, 0.2 * SOAK_S), SOAK_S * 2 / 3)
CHURN_PERIOD_S = 20.0
# Idle fds after the load may exceed those before it by this many (a watch reconnecting, a scrape
# in flight), and reach that within IDLE_WAIT_S (the router's keep-alive timeout is 30 s).
FD_SLACK, IDLE_WAIT_S = 3, 60.0
MAX_INPUT, MAX_OUTPUT = 2048, 256
REPO = find_repo_root(Path(__file__).resolve())
TRACE = REPO.parent / "shared" / "data" / "traces" / "mooncake_conversation_trace.jsonl"

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(SOAK_S + 480)]


def _load(name: str) -> ModuleType:
    # Test folders are not packages: the helpers beside this file are loaded from their path.
    key = f"flotilla_e2e_soak_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, Path(__file__).resolve().parent / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


memwatch = _load("memwatch")
soakreport = _load("soakreport")

COMPONENTS = {"router": ("router", "run"), "operator": ("operator", "run"), "placement": ("placement", "run")}
ASSERTED = ("router", "operator")


def _bounds(requests_per_s: float, window_s: float) -> dict[str, tuple[float, str]]:
    """Allowed growth (MiB) of each component's fitted RSS line over the measured window.

    Router: its work scales with requests, so its leaks do too. 1 KiB per request is less than any
    per-request record kept by mistake (a request's prompt alone is kilobytes), and would take a
    1 GiB pod (the chart's limit) past its limit only after ~1 million requests. Operator: its work
    scales with time (resyncs, watches, the churn fleet), so the bound is a rate, 32 MiB/h: below
    it, the chart's 512 MiB limit lasts more than ten hours from a ~100 MiB start; a leak per
    reconcile or per watch event is far steeper than that at a 10 s resync plus churn. Both get a
    floor of 4 MiB: the allocator reserves memory in arenas and pages, so RSS steps by a few MiB
    without any leak, which a short window's line cannot tell from a trend.
    """
    floor = 4.0
    router = max(floor, requests_per_s * window_s / 1024)
    operator = max(floor, 32.0 * window_s / 3600)
    return {
        "router": (router, f"max(4 MiB, 1 KiB x requests in the window) = {router:.2f} MiB"),
        "operator": (operator, f"max(4 MiB, 32 MiB/h x window) = {operator:.2f} MiB"),
    }


def _churn_fleet(name: str) -> dict[str, Any]:
    return {
        "apiVersion": labels.API_VERSION,
        "kind": labels.KIND,
        "metadata": {"name": name},
        "spec": {"model": {"name": "soak-churn", "source": "org/churn"}, "replicas": 1},
    }


async def _churn(ctx: DemoContext, name: str, done: list[int]) -> None:
    replicas = 1
    while True:
        await asyncio.sleep(CHURN_PERIOD_S)
        replicas = 3 - replicas
        await ctx.kubectl.run(
            "scale", "-n", demo_steps.DEMO_NAMESPACE, f"fleet/{name}", f"--replicas={replicas}"
        )
        done.append(replicas)


async def _fleet_ready(ctx: DemoContext, name: str, replicas: int) -> bool:
    out = await ctx.kubectl.run(
        "get", "fleet", name, "-n", demo_steps.DEMO_NAMESPACE, "-o", "jsonpath={.status.readyReplicas}"
    )
    return out.strip() == str(replicas)


def _idle(series: list[Any]) -> dict[str, Any]:
    return {s.name: memwatch.read_sample(s.pid, 0.0) for s in series}


async def _soak(ctx: DemoContext, out: dict[str, Any]) -> None:
    from rich.console import Console

    from flotilla.localcluster.demo_trace import TraceFit, load_trace
    from flotilla.localcluster.demo_traffic import replay

    assert ctx.router_url is not None
    pids = memwatch.children_by_cmdline(os.getpid(), COMPONENTS)
    assert set(pids) == set(COMPONENTS), f"component processes not found: {pids}"
    series = [memwatch.Series(name, pid) for name, pid in pids.items()]

    churn_name = "soak-churn"
    await ctx.kubectl.run(
        "apply", "-n", demo_steps.DEMO_NAMESPACE, "-f", "-", input=yaml.safe_dump(_churn_fleet(churn_name))
    )
    await wait_until(
        lambda: _fleet_ready(ctx, churn_name, 1), timeout_s=120, what="the churn fleet", interval_s=1
    )
    await asyncio.sleep(3)  # let the connections of start-up close before the idle baseline
    out["before"] = _idle(series)
    out["fds_before"] = {s.name: memwatch.open_fds(s.pid) for s in series if s.name in ASSERTED}

    models = [f["spec"]["model"]["name"] for f in ctx.fleets]
    fit = TraceFit(duration_s=SOAK_S, max_input_tokens=MAX_INPUT, max_output_tokens=MAX_OUTPUT)
    requests = await asyncio.to_thread(load_trace, TRACE, models, fit)
    stop = asyncio.Event()
    watcher = asyncio.create_task(memwatch.watch(series, PERIOD_S, stop))
    churns: list[int] = []
    churner = asyncio.create_task(_churn(ctx, churn_name, churns))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        results = await replay(ctx.router_url, requests, Console(file=io.StringIO()))
    finally:
        churner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await churner
    out["load_end_s"] = loop.time() - started
    # The operator must still act: the churn fleet reaches its last size, Ready.
    last = churns[-1] if churns else 1
    await wait_until(
        lambda: _fleet_ready(ctx, churn_name, last),
        timeout_s=120,
        what="the churn fleet's last scale",
        interval_s=1,
    )
    stop.set()
    await watcher
    # Idle again, every connection the load opened must close: the router's pooled connections to
    # the engines once aiohttp's keep-alive timeout (30 s) passes. A leaked socket never does.
    waited = loop.time()
    while True:
        out["after"] = _idle(series)
        settled = all(out["after"][n].fds <= out["before"][n].fds + FD_SLACK for n in ASSERTED)
        if settled or loop.time() - waited > IDLE_WAIT_S:
            break
        await asyncio.sleep(1.0)
    out["fds_settled_s"] = loop.time() - waited
    out["fds_after"] = {s.name: memwatch.open_fds(s.pid) for s in series if s.name in ASSERTED}
    out.update(series=series, results=results, churns=len(churns), requests=requests)


def _new_fds(before: list[str], after: list[str]) -> list[str]:
    # By what they are, not by number: fd numbers are reused.
    left = collections.Counter(line.split(": ", 1)[1] for line in before)
    new = []
    for line in after:
        what = line.split(": ", 1)[1]
        if left[what] > 0:
            left[what] -= 1
        else:
            new.append(line)
    return new


def _write_report(  # noqa: PLR0917
    target: Path,
    out: dict[str, Any],
    trends: dict[str, Any],
    verdicts: list[Any],
    fds: dict[str, tuple[int, int]],
    threads: dict[str, tuple[int, int]],
) -> None:
    results = out["results"]
    failed = sum(not r.ok for r in results)
    target.mkdir(parents=True, exist_ok=True)
    load = {
        "duration_s": SOAK_S,
        "max_input": MAX_INPUT,
        "max_output": MAX_OUTPUT,
        "churn_period_s": CHURN_PERIOD_S,
        "churns": out["churns"],
        "requests": len(results),
        "ok": len(results) - failed,
        "failed": failed,
        "rate": len(results) / out["load_end_s"],
        "tokens": sum(r.output_tokens for r in results),
        "fds_settled_s": out["fds_settled_s"],
    }
    soakreport.write_markdown(
        target / "soak.md",
        soak_s=SOAK_S,
        warmup_s=WARMUP_S,
        period_s=PERIOD_S,
        verdicts=verdicts,
        extra_trends={n: t for n, t in trends.items() if n not in ASSERTED},
        fds=fds,
        threads=threads,
        load=load,
    )
    soakreport.write_plot(target / "soak.png", out["series"], WARMUP_S, trends, out["load_end_s"])


async def test_router_and_operator_memory_stay_flat(tmp_path: Path) -> None:
    try:
        ensure_binaries(build=False)
    except BinariesMissing as exc:
        pytest.skip(f"the soak needs the control-plane binaries: {exc}")
    if not TRACE.exists():
        pytest.skip(f"the soak's trace is not here: {TRACE}")
    out: dict[str, Any] = {}

    async def soak_step(ctx: DemoContext) -> None:
        await _soak(ctx, out)

    steps = (
        demo_steps.install_crd,
        demo_steps.run_operator,
        demo_steps.run_placement,
        demo_steps.run_engines,
        demo_steps.run_router,
        demo_steps.apply_examples,
        demo_steps.wait_fleets_serving,
        soak_step,
    )
    name = f"flotilla-soak-{uuid.uuid4().hex[:6]}"
    options = DemoOptions(
        duration_s=SOAK_S, examples=REPO / "examples", out=tmp_path, keep_running=False, name=name
    )
    await demo(ClusterConfig(name=name), steps, options)

    results = out["results"]
    failed = [r for r in results if not r.ok]
    series = out["series"]
    trends = {s.name: memwatch.trend(s.samples, WARMUP_S, out["load_end_s"]) for s in series}
    window = trends["router"].window_s
    rate = len(results) / out["load_end_s"]
    bounds = _bounds(rate, window)
    verdicts = [soakreport.Verdict(n, trends[n], *bounds[n]) for n in ASSERTED]
    before, after = out["before"], out["after"]
    fds = {n: (before[n].fds, after[n].fds) for n in ASSERTED}
    threads = {n: (before[n].threads, after[n].threads) for n in ASSERTED}

    if report_dir := os.environ.get("FLOTILLA_SOAK_REPORT"):
        await asyncio.to_thread(_write_report, Path(report_dir), out, trends, verdicts, fds, threads)

    summary = {n: (round(t.growth_mib, 2), round(t.mib_per_hour, 1)) for n, t in trends.items()}
    print(f"\nsoak {SOAK_S:g} s: {len(results)} requests; RSS growth (MiB, MiB/h) {summary}")
    print(f"idle before/after load: fds {fds} (after {out['fds_settled_s']:.0f} s), threads {threads}")
    assert not failed, f"{len(failed)} of {len(results)} requests failed, first: {failed[0]}"
    assert out["churns"] >= 1 or SOAK_S < CHURN_PERIOD_S
    for v in verdicts:
        assert v.ok, (
            f"{v.name} RSS grows {v.trend.growth_mib:.2f} MiB over {v.trend.window_s:.0f} s ({v.why})"
        )
    # No leaked connections or threads: idle after the load as idle before it.
    for n in ASSERTED:
        new = _new_fds(out["fds_before"][n], out["fds_after"][n])
        assert fds[n][1] <= fds[n][0] + FD_SLACK, f"{n} holds more fds after the load: {fds[n]}: {new}"
        assert threads[n][1] <= threads[n][0] + 4, f"{n} has more threads after the load: {threads[n]}"
