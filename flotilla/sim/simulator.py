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

`FleetRun` holds one run's state with one handler per event kind; admitting and pumping the queue
are `SimRouter.admit`/`pump`, over the router's own dispatch and queue orders.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flotilla.profiles import EngineLimits, StepTimeProfile
from flotilla.router import features as router_features
from flotilla.router.batch_target import BatchTarget
from flotilla.router.dispatch import Steer
from flotilla.router.instances import EngineSample
from flotilla.router.policies import Policy, PolicyRegistry, RequestFeatures, default_registry
from flotilla.router.queue_orders import WaitQueue, default_queue_orders
from flotilla.router.slicing.decisions import RebalanceParams
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
    check_fits(requests, limits)
    policy = (policies or default_registry()).build(scenario.policy, scenario.params)
    # As the router does: predict once per request on arrival, carried in the features.
    features = [features_of(r, config.model, config.prefix_block_chars) for r in requests]
    if predicted is None:
        predicted = predict_lengths(requests, features, scenario.predictor, scenario.artifact)
    run = FleetRun(requests, features, predicted, profile, limits, scenario, config, policy, faults)
    return run.run()


class FleetRun:
    """One run's state and its event handlers: the engines, the router (`SimRouter`, the router's
    own core), the slicer, the per-request times, and the event heap."""

    def __init__(  # noqa: PLR0917
        self,
        requests: Sequence[SimRequest],
        features: Sequence[RequestFeatures],
        predicted: Sequence[float],
        profile: StepTimeProfile,
        limits: EngineLimits,
        scenario: Scenario,
        config: SimConfig,
        policy: Policy,
        faults: Sequence[Fault],
    ) -> None:
        """`features` as the router extracts them (`features_of`), `predicted` output tokens per request."""
        n = len(requests)
        m = config.instances
        self.requests = requests
        self.scenario_name = scenario.name
        self.config = config
        self.faults = faults
        self.engines = [
            EngineModel(
                profile,
                limits,
                priority=scenario.engine_priority,
                preempt_lowest_priority=scenario.preempt_lowest_priority,
            )
            for _ in range(m)
        ]
        self.predicted = predicted
        self.features = [
            replace(f, predicted_output_tokens=p) for f, p in zip(features, predicted, strict=True)
        ]
        # What the slice in flight (or waiting) was dispatched with, its prediction included: the
        # request's own without slicing.
        self.cur_features = list(self.features)
        queue: WaitQueue[int] = default_queue_orders().factory(scenario.queue, scenario.queue_params)(
            self.cur_features.__getitem__
        )
        self.router = SimRouter(
            instances=m,
            model=config.model,
            policy=policy,
            queue=queue,
            rng=random.Random(config.seed),
            max_inflight=config.max_inflight,
            predicted_remaining=lambda j: self.engines[j].predicted_remaining,
            kv_usage_limit=scenario.kv_usage_limit,
            batch_target=None
            if scenario.batch_target is None
            else BatchTarget.from_params(scenario.batch_target),
        )
        self.block_size = limits.block_size
        self.slicer = (
            Slicer(
                requests,
                [prefix_units(r, limits.block_size) for r in requests],
                slice_tokens=scenario.slice_tokens,
                rebalance=RebalanceParams.model_validate(scenario.slice_rebalance),
            )
            if scenario.slice_tokens
            else None
        )
        self.by_id = {r.id: i for i, r in enumerate(requests)}
        self.children: dict[int, list[int]] = {}

        self.arrival = np.full(n, np.nan)
        self.dispatched = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finished = np.full(n, np.nan)
        self.instance = np.full(n, -1, dtype=np.int64)
        self.seqs: list[Seq | None] = [None] * n
        self.first_seq: list[Seq | None] = [None] * n
        self.earlier_out = np.zeros(n, dtype=np.int64)  # tokens and preemptions of finished earlier slices
        self.earlier_preempt = np.zeros(n, dtype=np.int64)
        self.capacity_tokens = limits.kv_cache_blocks * limits.block_size
        self.stepping = [False] * m
        self.dead = [False] * m
        self.failed = np.zeros(n, dtype=bool)
        self.load_times: list[float] = []
        self.loads: list[list[int]] = []
        self.kv_usage: list[list[float]] = []
        self.done = 0
        self.events = 0

        self.heap: list[tuple[float, int, int, int]] = []
        self._counter = itertools.count()
        for i, r in enumerate(requests):
            self.heap.append((r.arrival, next(self._counter), _ARRIVE, i))
        self.heap.append((0.0, next(self._counter), _SCRAPE, 0))
        for k, f in enumerate(faults):
            if f.instance >= m:
                raise ValueError(f"fault on instance {f.instance} of a fleet of {m}")
            earliest = min((g for g in faults if g.instance == f.instance), key=lambda g: g.at)
            if f.kind == "add" and earliest is f:  # it joins later; an instance removed first is re-added
                self.router.down.add(f.instance)
            self.heap.append((f.at, next(self._counter), _FAULT, k))
        heapq.heapify(self.heap)

    def _push(self, at: float, kind: int, x: int) -> None:
        heapq.heappush(self.heap, (at, next(self._counter), kind, x))

    # ---- the loop ------------------------------------------------------------------------------

    def run(self) -> RunResult:
        n = len(self.requests)
        while self.heap and self.done < n:
            now, _, kind, x = heapq.heappop(self.heap)
            self.events += 1
            if kind == _STEP:
                self.on_step(x, now)
            elif kind == _ARRIVE:
                self.on_arrive(x, now)
            elif kind == _FAULT:
                self.done += self.on_fault(self.faults[x], now)
            else:
                self.on_scrape(now)
        return self.result()

    def on_step(self, j: int, now: float) -> None:
        """Engine `j` finished a step: first tokens, finished requests (or slices), its next step."""
        if self.dead[j]:
            return
        self.stepping[j] = False
        first, fin = self.engines[j].end_step(now)
        for s in first:
            self.router.first_token(j, self.cur_features[s.idx])
            if np.isnan(self.first_token[s.idx]):
                self.first_token[s.idx] = now
        more: list[int] = []
        for s in fin:
            i = s.idx
            self.router.release(j, self.cur_features[i], self.cur_pred(i))
            if self.slicer is not None and self.slicer.finished(i, s, j):
                self.earlier_out[i] += s.out
                self.earlier_preempt[i] += s.preemptions
                more.append(i)
                continue
            self.finished[i] = now
            self.done += 1
            self.end(i, now)
        if fin:
            self.pump(now)
        for i in more:
            self.admit(i, now)
        self.kick(j, now)

    def on_arrive(self, i: int, now: float) -> None:
        r = self.requests[i]
        parent = self.by_id.get(r.parent) if r.parent is not None else None
        if parent is not None and np.isnan(self.finished[parent]) and not self.failed[parent]:
            self.children.setdefault(parent, []).append(i)
            return
        self.arrival[i] = now
        self.admit(i, now)

    def on_scrape(self, now: float) -> None:
        samples = [
            EngineSample(
                running=e.num_running,
                waiting=e.num_waiting,
                kv_usage=e.kv.usage,
                kv_capacity_tokens=self.capacity_tokens,
                prefix_queries=float(e.prefix_queries),
                prefix_hits=float(e.prefix_hits),
            )
            for e in self.engines
        ]
        self.router.scrape(samples)
        self.load_times.append(now)
        self.loads.append([s.running + s.waiting for s in samples])
        self.kv_usage.append([s.kv_usage for s in samples])
        self._push(now + self.config.scrape_interval_s, _SCRAPE, 0)

    def on_fault(self, f: Fault, now: float) -> int:
        """Apply a fault; returns how many requests it ended (failed)."""
        j = f.instance
        if f.kind == "add":
            self.router.down.discard(j)
            self.pump(now)
            return 0
        self.router.down.add(j)
        if f.kind == "remove":
            return 0
        self.dead[j] = True
        ended = 0
        more: list[int] = []
        for s in self.engines[j].kill():
            i = s.idx
            self.router.release(j, self.cur_features[i], self.cur_pred(i), prefilled=s.first_done)
            self.earlier_out[i] += s.out
            self.earlier_preempt[i] += s.preemptions
            self.seqs[i] = None
            if self.slicer is not None and self.slicer.failed_over(i, s):
                more.append(i)
                continue
            if self.slicer is not None:  # it had streamed every token: served
                self.finished[i] = now
            else:
                self.failed[i] = True
            ended += 1
            self.end(i, now)
        self.pump(now)
        for i in more:
            self.admit(i, now)
        return ended

    # ---- the router's side ---------------------------------------------------------------------

    def cur_pred(self, i: int) -> float:
        """The predicted output tokens request `i`'s current slice was dispatched with."""
        return self.cur_features[i].predicted_output_tokens or 0.0

    def ask(self, i: int) -> tuple[RequestFeatures, float, Steer | None]:
        """What request `i` (its current slice) is dispatched with."""
        return self.cur_features[i], self.cur_pred(i), self.slicer.steer(i) if self.slicer else None

    def admit(self, i: int, now: float) -> None:
        """A request (or its next slice) asks for an instance: at once if nobody waits, else queued."""
        if self.slicer is not None:
            self.cur_features[i] = self.slicer.next_slice(i, self.features[i], self.predicted[i])
        j = self.router.admit(i, *self.ask(i), now)
        if j is not None:
            self.send(i, j, now)

    def pump(self, now: float) -> None:
        for i, j in self.router.pump(now, self.ask):
            self.send(i, j, now)

    def send(self, i: int, j: int, now: float) -> None:
        r = self.requests[i]
        if self.slicer is None:
            s = Seq(
                idx=i,
                prompt=r.prompt_tokens,
                target=max(
                    1, r.output_tokens if r.max_tokens is None else min(r.output_tokens, r.max_tokens)
                ),
                units=prefix_units(r, self.block_size),
                mark=self.predicted[i],
                priority=self.predicted[i],
            )
        else:
            left = max(1.0, self.predicted[i] - self.slicer.generated[i])
            s = self.slicer.seq(i, j, mark=self.cur_pred(i), priority=left)
        self.seqs[i] = s
        if self.first_seq[i] is None:
            self.first_seq[i] = s
            self.dispatched[i] = now
        self.instance[i] = j
        self.engines[j].add(s)
        self.kick(j, now)

    def kick(self, j: int, now: float) -> None:
        if self.stepping[j] or self.dead[j]:
            return
        seconds = self.engines[j].begin_step(now)
        if seconds > 0.0:
            self.stepping[j] = True
            self._push(now + seconds, _STEP, j)

    def end(self, i: int, now: float) -> None:
        """A request is over (served or failed): a later turn of its session may now be sent."""
        for c in self.children.pop(i, ()):
            self._push(now, _ARRIVE, c)

    # ---- the outcome ---------------------------------------------------------------------------

    def result(self) -> RunResult:
        n, m = len(self.requests), len(self.engines)
        engines, seqs, first_seq, slicer = self.engines, self.seqs, self.first_seq, self.slicer
        admitted = np.array(
            [s.admitted_at if s is not None and s.admitted_at >= 0 else np.nan for s in first_seq]
        )
        return RunResult(
            scenario=self.scenario_name,
            arrival=self.arrival,
            dispatched=self.dispatched,
            admitted=admitted,
            first_token=self.first_token,
            finished=self.finished,
            instance=self.instance,
            output_tokens=self.earlier_out
            + np.array([s.out if s is not None else 0 for s in seqs], dtype=np.int64),
            prompt_tokens=np.array([r.prompt_tokens for r in self.requests], dtype=np.int64),
            preemptions=self.earlier_preempt
            + np.array([s.preemptions if s is not None else 0 for s in seqs], dtype=np.int64),
            instance_preemptions=np.array([e.preemptions for e in engines], dtype=np.int64),
            instance_prefix_hits=np.array([e.prefix_hits for e in engines], dtype=np.int64),
            instance_prefix_queries=np.array([e.prefix_queries for e in engines], dtype=np.int64),
            instance_busy_s=np.array([e.busy_s for e in engines]),
            instance_generated=np.array([e.generated for e in engines], dtype=np.int64),
            load_times=np.array(self.load_times),
            loads=np.array(self.loads, dtype=np.int64).reshape(len(self.load_times), m),
            kv_usage=np.array(self.kv_usage).reshape(len(self.load_times), m),
            events=self.events,
            decisions=self.router.decisions,
            slices=np.array(
                slicer.slices if slicer else [int(s is not None) for s in first_seq], dtype=np.int64
            ),
            moves=np.array(slicer.moves if slicer else [0] * n, dtype=np.int64),
            instance_prefill_tokens=np.array([e.prefill_tokens for e in engines], dtype=np.int64),
            failed=self.failed,
        )
