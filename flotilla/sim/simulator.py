"""The discrete-event loop: arrivals, router decisions, engine steps, scrapes, completions.

Virtual time advances from event to event on one heap (no asyncio, no wall clock), so a run is a
pure function of its inputs and seed. Events: a request arrives (or, for a later turn of a session,
becomes sendable when its previous turn completes), an engine step ends, the router scrapes every
engine. A step's effects are applied when it ends; the engine then schedules its next step at once,
as vLLM's busy loop does.

With `Scenario.slice_tokens` > 0 a request runs as slices (`flotilla.sim.slices`): a slice that
ends by its budget is released like a finished request and its continuation is admitted like a
new one (dispatched at once when nobody waits, else queued), behind whatever the freed slot went
to, as the live router's continuation loop does. Client-visible times stay per request: first
token of the first slice, end of the last; TPOT therefore includes the gaps between slices.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flotilla.profiles import EngineLimits, StepTimeProfile
from flotilla.router import features as router_features
from flotilla.router.instances import EngineSample
from flotilla.router.policies import PolicyRegistry, RequestFeatures, default_registry
from flotilla.router.queue_orders import WaitQueue, default_queue_orders
from flotilla.router.slicing import RebalanceParams
from flotilla.sim.engine import EngineModel, Seq
from flotilla.sim.faults import Fault
from flotilla.sim.predictions import predict_lengths
from flotilla.sim.request import SimRequest, prefix_units, router_prefix_hashes
from flotilla.sim.router import SimRouter
from flotilla.sim.scenario import Scenario
from flotilla.sim.slices import Slicer

_STEP, _ARRIVE, _SCRAPE, _FAULT = 0, 1, 2, 3


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instances: int = Field(gt=0)
    scrape_interval_s: float = Field(default=0.25, gt=0, description="the router's scrape interval")
    max_inflight: int = Field(default=256, gt=0, description="router slots per instance")
    seed: int = 0
    model: str = "sim"
    prefix_block_chars: int = Field(
        default=router_features.PREFIX_BLOCK_CHARS, gt=0, description="the router's prefix_block_chars"
    )


@dataclass
class RunResult:
    """Per-request times (seconds, NaN where never reached) and per-instance counters of one run."""

    scenario: str
    arrival: np.ndarray
    dispatched: np.ndarray
    admitted: np.ndarray
    first_token: np.ndarray
    finished: np.ndarray
    instance: np.ndarray
    output_tokens: np.ndarray
    prompt_tokens: np.ndarray
    preemptions: np.ndarray
    instance_preemptions: np.ndarray
    instance_prefix_hits: np.ndarray
    instance_prefix_queries: np.ndarray
    instance_busy_s: np.ndarray
    instance_generated: np.ndarray
    load_times: np.ndarray
    """Scrape times."""
    loads: np.ndarray
    """running + waiting of each instance at each scrape (scrapes x instances)."""
    kv_usage: np.ndarray
    events: int
    decisions: int
    slices: np.ndarray
    """Engine calls per request (1 without slicing)."""
    moves: np.ndarray
    """Continuation slices of each request that ran on another instance than the slice before."""
    instance_prefill_tokens: np.ndarray
    """Prompt tokens each engine computed (prefix hits excluded; re-prefills and recomputes included)."""
    failed: np.ndarray
    """Requests lost to a killed engine (`faults`); their `finished` is NaN."""


def features_of(
    req: SimRequest, model: str, block_chars: int = router_features.PREFIX_BLOCK_CHARS
) -> RequestFeatures:
    """What the router extracts from the request: text prompts hashed as the router hashes text,
    token prompts by their trace prefix ids (no max_tokens: the engine stops at the true length).
    The prompt length is the trace's token count, where the live router estimates text prompts at
    `CHARS_PER_TOKEN` (it does not tokenize)."""
    if req.text is not None:
        hashes = router_features.prefix_hashes(
            req.text,
            block_chars=block_chars,
            block_tokens=router_features.PREFIX_BLOCK_TOKENS,
            max_blocks=router_features.MAX_PREFIX_BLOCKS,
        )
    else:
        hashes = router_prefix_hashes(
            req,
            block_tokens=router_features.PREFIX_BLOCK_TOKENS,
            max_blocks=router_features.MAX_PREFIX_BLOCKS,
        )
    return RequestFeatures(model=model, prompt_tokens=req.prompt_tokens, prefix_hashes=hashes)


def check_fits(requests: Sequence[SimRequest], limits: EngineLimits) -> None:
    """Every request must be servable alone (vLLM rejects longer prompts; the loaders clip them)."""
    for r in requests:
        total = min(r.prompt_tokens + max(1, r.output_tokens), limits.max_model_len)
        if r.prompt_tokens >= limits.max_model_len or -(-total // limits.block_size) > limits.kv_cache_blocks:
            raise ValueError(
                f"request {r.id} ({r.prompt_tokens}+{r.output_tokens} tokens) does not fit {limits}"
            )


def simulate(
    requests: Sequence[SimRequest],
    profile: StepTimeProfile,
    limits: EngineLimits,
    scenario: Scenario,
    config: SimConfig,
    *,
    policies: PolicyRegistry | None = None,
    predicted: Sequence[float] | None = None,
    faults: Sequence[Fault] = (),
) -> RunResult:
    """Run `requests` through the fleet; `policies` defaults to the router's own registry, and
    `predicted` (output tokens per request) to the scenario's predictor run here; `faults`
    (`flotilla.sim.faults`) happen at their times."""
    n = len(requests)
    m = config.instances
    engines = [
        EngineModel(
            profile,
            limits,
            priority=scenario.engine_priority,
            preempt_lowest_priority=scenario.preempt_lowest_priority,
        )
        for _ in range(m)
    ]
    policy = (policies or default_registry()).build(scenario.policy, scenario.params)
    check_fits(requests, limits)
    # As the router does: predict once per request on arrival, carried in the features.
    features = [features_of(r, config.model, config.prefix_block_chars) for r in requests]
    if predicted is None:
        predicted = predict_lengths(requests, features, scenario.predictor, scenario.artifact)
    features = [replace(f, predicted_output_tokens=p) for f, p in zip(features, predicted, strict=True)]
    # What the slice in flight (or waiting) was dispatched with: the request's own without slicing.
    cur_features = list(features)
    cur_pred = list(predicted)
    queue: WaitQueue[int] = default_queue_orders().factory(scenario.queue, scenario.queue_params)(
        cur_pred.__getitem__
    )
    rng = random.Random(config.seed)
    router = SimRouter(
        instances=m,
        model=config.model,
        policy=policy,
        queue=queue,
        rng=rng,
        max_inflight=config.max_inflight,
        predicted_remaining=lambda j: engines[j].predicted_remaining,
        kv_usage_limit=scenario.kv_usage_limit,
    )
    slicer = (
        Slicer(
            requests,
            [prefix_units(r, limits.block_size) for r in requests],
            slice_tokens=scenario.slice_tokens,
            rebalance=RebalanceParams.model_validate(scenario.slice_rebalance),
        )
        if scenario.slice_tokens
        else None
    )
    by_id = {r.id: i for i, r in enumerate(requests)}
    children: dict[int, list[int]] = {}

    arrival = np.full(n, np.nan)
    dispatched = np.full(n, np.nan)
    first_token = np.full(n, np.nan)
    finished = np.full(n, np.nan)
    instance = np.full(n, -1, dtype=np.int64)
    seqs: list[Seq | None] = [None] * n
    first_seq: list[Seq | None] = [None] * n
    earlier_out = np.zeros(n, dtype=np.int64)  # tokens and preemptions of finished earlier slices
    earlier_preempt = np.zeros(n, dtype=np.int64)
    capacity_tokens = limits.kv_cache_blocks * limits.block_size
    stepping = [False] * m
    dead = [False] * m
    failed = np.zeros(n, dtype=bool)

    heap: list[tuple[float, int, int, int]] = []
    counter = 0
    for i, r in enumerate(requests):
        heap.append((r.arrival, counter, _ARRIVE, i))
        counter += 1
    heap.append((0.0, counter, _SCRAPE, 0))
    counter += 1
    for k, f in enumerate(faults):
        if f.instance >= m:
            raise ValueError(f"fault on instance {f.instance} of a fleet of {m}")
        earliest = min((g for g in faults if g.instance == f.instance), key=lambda g: g.at)
        if f.kind == "add" and earliest is f:  # it joins later; an instance removed first is re-added
            router.down.add(f.instance)
        heap.append((f.at, counter, _FAULT, k))
        counter += 1
    heapq.heapify(heap)
    load_times: list[float] = []
    loads: list[list[int]] = []
    kv_usage: list[list[float]] = []

    def kick(j: int, now: float) -> None:
        nonlocal counter
        if stepping[j] or dead[j]:
            return
        seconds = engines[j].begin_step(now)
        if seconds > 0.0:
            stepping[j] = True
            heapq.heappush(heap, (now + seconds, counter, _STEP, j))
            counter += 1

    def send(i: int, j: int, now: float) -> None:
        r = requests[i]
        if slicer is None:
            s = Seq(
                idx=i,
                prompt=r.prompt_tokens,
                target=max(
                    1, r.output_tokens if r.max_tokens is None else min(r.output_tokens, r.max_tokens)
                ),
                units=prefix_units(r, limits.block_size),
                mark=predicted[i],
                priority=predicted[i],
            )
        else:
            left = max(1.0, predicted[i] - slicer.generated[i])
            s = slicer.seq(i, j, mark=cur_pred[i], priority=left)
        seqs[i] = s
        if first_seq[i] is None:
            first_seq[i] = s
            dispatched[i] = now
        instance[i] = j
        engines[j].add(s)
        kick(j, now)

    def route(i: int) -> int | None:
        return router.dispatch(cur_features[i], cur_pred[i], slicer.steer(i) if slicer else None)

    def admit(i: int, now: float) -> None:
        """A request (or its next slice) asks for an instance: at once if nobody waits, else queued."""
        if slicer is not None:
            cur_features[i], cur_pred[i] = slicer.next_slice(i, features[i], predicted[i])
        j = route(i) if not len(queue) else None
        if j is None:
            queue.push(i, now)
        else:
            send(i, j, now)

    def pump(now: float) -> None:
        while len(queue):
            i = queue.peek(now)
            assert i is not None
            j = route(i)
            if j is None:
                return
            queue.pop(now)
            send(i, j, now)

    def end(i: int, now: float) -> None:
        """A request is over (served or failed): a later turn of its session may now be sent."""
        nonlocal counter
        for c in children.pop(i, ()):
            heapq.heappush(heap, (now, counter, _ARRIVE, c))
            counter += 1

    def fault(f: Fault, now: float) -> int:
        """Apply a fault; returns how many requests it ended (failed)."""
        j = f.instance
        if f.kind == "add":
            router.down.discard(j)
            pump(now)
            return 0
        router.down.add(j)
        if f.kind == "remove":
            return 0
        dead[j] = True
        ended = 0
        more: list[int] = []
        for s in engines[j].kill():
            i = s.idx
            router.release(j, cur_features[i], cur_pred[i], prefilled=s.first_done)
            earlier_out[i] += s.out
            earlier_preempt[i] += s.preemptions
            seqs[i] = None
            if slicer is not None and slicer.failed_over(i, s):
                more.append(i)
                continue
            if slicer is not None:  # it had streamed every token: served
                finished[i] = now
            else:
                failed[i] = True
            ended += 1
            end(i, now)
        pump(now)
        for i in more:
            admit(i, now)
        return ended

    done = 0
    events = 0
    while heap and done < n:
        now, _, kind, x = heapq.heappop(heap)
        events += 1
        if kind == _STEP:
            if dead[x]:
                continue
            stepping[x] = False
            first, fin = engines[x].end_step(now)
            for s in first:
                router.first_token(x, cur_features[s.idx])
                if np.isnan(first_token[s.idx]):
                    first_token[s.idx] = now
            more: list[int] = []
            for s in fin:
                i = s.idx
                router.release(x, cur_features[i], cur_pred[i])
                if slicer is not None and slicer.finished(i, s, x):
                    earlier_out[i] += s.out
                    earlier_preempt[i] += s.preemptions
                    more.append(i)
                    continue
                finished[i] = now
                done += 1
                end(i, now)
            if fin:
                pump(now)
            for i in more:
                admit(i, now)
            kick(x, now)
        elif kind == _ARRIVE:
            r = requests[x]
            parent = by_id.get(r.parent) if r.parent is not None else None
            if parent is not None and np.isnan(finished[parent]) and not failed[parent]:
                children.setdefault(parent, []).append(x)
                continue
            arrival[x] = now
            admit(x, now)
        elif kind == _FAULT:
            done += fault(faults[x], now)
        else:
            samples = [
                EngineSample(
                    running=e.num_running,
                    waiting=e.num_waiting,
                    kv_usage=e.kv.usage,
                    kv_capacity_tokens=capacity_tokens,
                    prefix_queries=float(e.prefix_queries),
                    prefix_hits=float(e.prefix_hits),
                )
                for e in engines
            ]
            router.scrape(samples)
            load_times.append(now)
            loads.append([s.running + s.waiting for s in samples])
            kv_usage.append([s.kv_usage for s in samples])
            heapq.heappush(heap, (now + config.scrape_interval_s, counter, _SCRAPE, 0))
            counter += 1

    admitted = np.array(
        [s.admitted_at if s is not None and s.admitted_at >= 0 else np.nan for s in first_seq]
    )
    return RunResult(
        scenario=scenario.name,
        arrival=arrival,
        dispatched=dispatched,
        admitted=admitted,
        first_token=first_token,
        finished=finished,
        instance=instance,
        output_tokens=earlier_out + np.array([s.out if s is not None else 0 for s in seqs], dtype=np.int64),
        prompt_tokens=np.array([r.prompt_tokens for r in requests], dtype=np.int64),
        preemptions=earlier_preempt
        + np.array([s.preemptions if s is not None else 0 for s in seqs], dtype=np.int64),
        instance_preemptions=np.array([e.preemptions for e in engines], dtype=np.int64),
        instance_prefix_hits=np.array([e.prefix_hits for e in engines], dtype=np.int64),
        instance_prefix_queries=np.array([e.prefix_queries for e in engines], dtype=np.int64),
        instance_busy_s=np.array([e.busy_s for e in engines]),
        instance_generated=np.array([e.generated for e in engines], dtype=np.int64),
        load_times=np.array(load_times),
        loads=np.array(loads, dtype=np.int64).reshape(len(load_times), m),
        kv_usage=np.array(kv_usage).reshape(len(load_times), m),
        events=events,
        decisions=router.decisions,
        slices=np.array(slicer.slices if slicer else [int(s is not None) for s in first_seq], dtype=np.int64),
        moves=np.array(slicer.moves if slicer else [0] * n, dtype=np.int64),
        instance_prefill_tokens=np.array([e.prefill_tokens for e in engines], dtype=np.int64),
        failed=failed,
    )
