"""`flotilla bench live`: every arm against the same engine processes, interleaved, in one run.

Engines start once and serve every arm. Each round runs every arm once, in an order rotated by one
per round, so slow drift of this shared machine (other jobs, thermal, caches) falls on all arms
alike rather than on whichever ran last. Each arm run gets a fresh router process and a freshly
salted copy of the workload (same arrivals, lengths and sharing, text no other arm has seen), and
starts only when every engine reports nothing running or waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flotilla.loadgen.fleetprobe import STALENESS, FleetProbe, FleetStats, router_buckets
from flotilla.loadgen.openloop import http_client, run_open_loop
from flotilla.loadgen.record import RequestRecord
from flotilla.loadgen.summary import Slo, Summary, summarise
from flotilla.loadgen.targets import Arm, started_router
from flotilla.loadgen.workload import PlannedRequest, plan, poisson, trace_window
from flotilla.localcluster.engines import EngineCommand, EngineSimCommand, loopback_engines

Log = Callable[[str], None]


class EngineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["enginesim", "vllm"] = "enginesim"
    """`vllm`: real vLLM (CPU) serving the local benchmark model, one core per engine in turn."""
    count: int = Field(default=4, gt=0)
    profile: str = "h100-llama3-8b"
    """enginesim only: its step-time profile."""
    time_scale: float = Field(default=2.0, ge=0)
    """enginesim only: multiplies the profile's step times (a slower GPU, so two CPU cores can
    feed four engines)."""
    max_num_seqs: int = Field(default=16, gt=0)
    max_model_len: int = Field(default=16384, gt=0)


class WorkloadSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "mooncake_conversation"
    """A trace of `flotilla.sim.workloads.TRACES`, or `poisson`."""
    duration_s: float = Field(default=30.0, gt=0)
    skip_s: float = Field(default=0.0, ge=0)
    rate: float | None = Field(default=None, gt=0)
    """Mean requests/s (a trace's times are rescaled, keeping its burstiness); None: the trace's own."""
    prompt_tokens: int = Field(default=512, gt=0)
    """Poisson only (traces carry their own lengths)."""
    output_tokens: int = Field(default=128, gt=0)


class LiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workloads: list[WorkloadSpec]
    arms: list[Arm] = Field(min_length=1)
    engines: EngineSettings = EngineSettings()
    rounds: int = Field(default=2, gt=0)
    baseline: str = "round_robin"
    slo: Slo = Slo()
    drain_timeout_s: float = Field(default=120.0, gt=0)
    probe_interval_s: float = Field(default=0.5, gt=0)
    model: str = "bench"
    seed: int = 0


class ArmRun(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str
    arm: str
    round: int
    order: int
    summary: Summary
    fleet: FleetStats
    staleness: dict[float, float] = Field(default_factory=dict)
    """Shared-state arms: the replicas' `flotilla_router_peer_staleness_seconds` buckets of
    dispatches (a request's start, end, first token)."""


class ArmPooled(BaseModel):
    """All rounds of one arm on one workload, records pooled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str
    arm: str
    summary: Summary
    fleet: FleetStats
    staleness: dict[float, float] = Field(default_factory=dict)


class LiveResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: LiveConfig
    requests_per_run: dict[str, int]
    runs: list[ArmRun] = Field(default_factory=list)
    pooled: list[ArmPooled] = Field(default_factory=list)


def build_requests(
    spec: WorkloadSpec, *, max_model_len: int, seed: int, words: Sequence[str] | None = None
) -> list[PlannedRequest]:
    """The workload's requests with salt `seed`, prompts in `words` (see `workload.py`)."""
    if spec.name == "poisson":
        count = max(1, round((spec.rate or 1.0) * spec.duration_s))
        sims = poisson(
            rate=spec.rate or 1.0,
            count=count,
            prompt_tokens=spec.prompt_tokens,
            output_tokens=spec.output_tokens,
            seed=0,  # the same arrivals for every arm; only the text differs by salt
        )
        return plan(sims, salt=seed, words=words)
    from flotilla.sim.workloads import load

    # Enough of the trace to cover the window at the requested rate (the trace is ~3-5 req/s).
    trace = load(spec.name, max_model_len=max_model_len, limit=20_000).requests
    window = trace_window(trace, duration_s=spec.duration_s, rate=spec.rate, skip_s=spec.skip_s)
    return plan(window, salt=seed, words=words)


def _pool_fleet(stats: list[FleetStats]) -> FleetStats:
    total = sum(s.samples for s in stats) or 1

    def weighted(get: Callable[[FleetStats], float]) -> float:
        return sum(get(s) * s.samples for s in stats) / total

    return FleetStats(
        load_cv=weighted(lambda s: s.load_cv),
        max_share=weighted(lambda s: s.max_share),
        prefix_hit_rate=weighted(lambda s: s.prefix_hit_rate),
        preemptions=sum(s.preemptions for s in stats),
        prefill_tokens=sum(s.prefill_tokens for s in stats),
        samples=sum(s.samples for s in stats),
    )


def _pool_buckets(runs: list[dict[float, float]]) -> dict[float, float]:
    out: dict[float, float] = {}
    for buckets in runs:
        for le, n in buckets.items():
            out[le] = out.get(le, 0.0) + n
    return out


@contextlib.asynccontextmanager
async def _nats_for(arms: list[Arm]) -> AsyncIterator[str | None]:
    """The run's NATS server, when an arm's replicas share their state (one for the whole run)."""
    if not any(a.shared_state for a in arms):
        yield None
        return
    from flotilla.localcluster.nats import nats_server

    async with nats_server() as server:
        yield server.url


async def _run_arm(
    config: LiveConfig,
    arm: Arm,
    requests: list[PlannedRequest],
    engines: list[str],
    workdir: Path,
    *,
    nats_url: str | None = None,
) -> tuple[list[RequestRecord], FleetStats, dict[float, float]]:
    async with (
        http_client(config.drain_timeout_s + 60) as client,
        started_router(
            arm, model=config.model, engines=engines, workdir=workdir, seed=config.seed, nats_url=nats_url
        ) as urls,
    ):
        probe = FleetProbe(client, engines)
        if not await probe.wait_idle(config.drain_timeout_s):
            raise RuntimeError("engines still busy from the previous arm")
        stop = asyncio.Event()
        sampler = asyncio.create_task(probe.run(config.probe_interval_s, stop))
        try:
            records = await run_open_loop(
                client, urls, config.model, requests, drain_timeout_s=config.drain_timeout_s
            )
        finally:
            stop.set()
            await sampler
        # Requests cancelled at the drain timeout may still run on the engines: let them finish
        # before the next arm (and count them only here).
        await probe.wait_idle(config.drain_timeout_s)
        # How old a peer's view of a replica's dispatches is (not its coalesced progress).
        where = {"kind": "dispatch"}
        staleness = await router_buckets(client, urls, STALENESS, where) if arm.shared_state else {}
        return records, probe.stats(), staleness


def engine_command(settings: EngineSettings) -> tuple[EngineCommand, list[str] | None]:
    """What each engine runs, and the one-token words prompts are written in (None: enginesim's)."""
    if settings.kind == "enginesim":
        flags = {
            "--profile": settings.profile,
            "--time-scale": settings.time_scale,
            "--max-num-seqs": settings.max_num_seqs,
            "--max-model-len": settings.max_model_len,
        }
        return EngineSimCommand(extra_args=[a for kv in flags.items() for a in map(str, kv)]), None
    from flotilla.vllmcpu.command import VllmCommand
    from flotilla.vllmcpu.install import ensure_vllm
    from flotilla.vllmcpu.vocabulary import one_token_words

    install = ensure_vllm(install=True)
    command = VllmCommand(
        install, size="bench", max_model_len=settings.max_model_len, max_num_seqs=settings.max_num_seqs
    )
    return command, one_token_words(install.model("bench"))


async def run_live(
    config: LiveConfig, log: Log, checkpoint: Callable[[LiveResults], None] | None = None
) -> LiveResults:
    """Run every arm; `checkpoint` gets the results so far after each arm run (so a run cut short
    still leaves its measurements)."""
    names = [a.name for a in config.arms]
    if config.baseline not in names:
        raise ValueError(f"baseline {config.baseline!r} is not one of the arms {names}")
    results = LiveResults(config=config, requests_per_run={})
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="flotilla-bench-live-"))
    finished = False
    try:
        command, words = await asyncio.to_thread(engine_command, config.engines)
        async with (
            loopback_engines(
                command, count=config.engines.count, model=config.model, log_dir=workdir / "engines"
            ) as urls,
            _nats_for(config.arms) as nats_url,
        ):
            salt = config.seed * 1_000_003
            for spec in config.workloads:
                records: dict[str, list[RequestRecord]] = {a.name: [] for a in config.arms}
                fleet: dict[str, list[FleetStats]] = {a.name: [] for a in config.arms}
                stale: dict[str, list[dict[float, float]]] = {a.name: [] for a in config.arms}
                n = len(config.arms)
                for rnd in range(config.rounds):
                    order = config.arms[rnd % n :] + config.arms[: rnd % n]
                    for position, arm in enumerate(order):
                        salt += 1
                        requests = await asyncio.to_thread(
                            build_requests,
                            spec,
                            max_model_len=config.engines.max_model_len,
                            seed=salt,
                            words=words,
                        )
                        results.requests_per_run[spec.name] = len(requests)
                        recs, stats, staleness = await _run_arm(
                            config, arm, requests, urls, workdir, nats_url=nats_url
                        )
                        stale[arm.name].append(staleness)
                        summary = summarise(recs, config.slo, spec.duration_s)
                        records[arm.name] += recs
                        fleet[arm.name].append(stats)
                        results.runs.append(
                            ArmRun(
                                workload=spec.name,
                                arm=arm.name,
                                round=rnd,
                                order=position,
                                summary=summary,
                                fleet=stats,
                                staleness=staleness,
                            )
                        )
                        log(_line(spec.name, rnd, arm.name, summary, stats))
                        if checkpoint is not None:
                            await asyncio.to_thread(checkpoint, results)
                for arm in config.arms:
                    window = spec.duration_s * config.rounds
                    results.pooled.append(
                        ArmPooled(
                            workload=spec.name,
                            arm=arm.name,
                            summary=summarise(records[arm.name], config.slo, window),
                            fleet=_pool_fleet(fleet[arm.name]),
                            staleness=_pool_buckets(stale[arm.name]),
                        )
                    )
        finished = True
        return results
    finally:
        if finished:  # router logs are kept only when something went wrong
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        else:
            log(f"router logs and configs kept in {workdir}")


def _line(workload: str, rnd: int, arm: str, s: Summary, f: FleetStats) -> str:
    def ms(x: float) -> str:
        return "-" if math.isnan(x) else f"{x * 1000:.0f}"

    return (
        f"{workload} round {rnd} {arm:<28} ok {s.ok}/{s.requests} lost {s.lost}  "
        f"TTFT mean {ms(s.ttft_s.mean)} p99 {ms(s.ttft_s.p99)} ms  TPOT mean {ms(s.tpot_s.mean)} ms  "
        f"e2e mean {ms(s.e2e_s.mean)} p99 {ms(s.e2e_s.p99)} ms  {s.throughput_tok_s:.0f} tok/s  "
        f"load CV {f.load_cv:.2f}  prefix hits {f.prefix_hit_rate:.0%}  preempt {f.preemptions:.0f}"
    )
