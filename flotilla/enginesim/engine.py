"""The engine loop: the project's one engine model (`flotilla.sim.engine.EngineModel`, vLLM v1's
continuous-batching step) run under an asyncio clock, with real tokens.

The model decides every step: which sequences run, the chunked prefill, prefix-cache reuse, KV
block allocation and preemption, and the step's work, timed by the step-time profile (then slept,
scaled by `time_scale`). What this loop adds is what only a real engine has: the tokens. After each
step every sequence the model advanced samples its next token from the text model; an EOS, a stop
string or `max_tokens` ends it (`EngineModel.stop` for the first two, the model's own target for
the last), and every block its tokens fill is cached under the chained hash of those tokens
(`EngineModel.cache_block`), so a later prompt that repeats a prompt or an answer hits the cache
as it would on vLLM. The fleet simulator runs the same model in virtual time without tokens.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

from flotilla.enginesim.kvcache import block_hashes
from flotilla.enginesim.metrics import EngineMetrics
from flotilla.enginesim.sequence import Sequence, TokenEvent
from flotilla.enginesim.textmodel import TextModel
from flotilla.enginesim.tokenizer import Tokenizer
from flotilla.profiles import EngineLimits, StepTimeProfile
from flotilla.sim.engine import EngineModel, Seq
from flotilla.sim.request import PrefixUnit

Sleep = Callable[[float], Awaitable[None]]


class Engine:
    def __init__(
        self,
        *,
        model: TextModel,
        tokenizer: Tokenizer,
        profile: StepTimeProfile,
        limits: EngineLimits,
        metrics: EngineMetrics,
        time_scale: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.profile = profile
        self.limits = limits
        self.metrics = metrics
        self.core = EngineModel(profile, limits)
        self._time_scale = time_scale
        self._sleep = sleep
        self._clock = clock
        self._seqs: dict[Seq, Sequence] = {}
        self._core_of: dict[Sequence, Seq] = {}
        self._ids = itertools.count()
        self._in_step = False
        self._aborted: list[Sequence] = []
        self._wake = asyncio.Event()
        self._counted = (0, 0, 0)
        self.steps = 0

    # ---- requests in and out -------------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        bs = self.limits.block_size
        units = tuple(PrefixUnit(h, 1, (b + 1) * bs) for b, h in enumerate(block_hashes(seq.prompt_ids, bs)))
        core = Seq(idx=next(self._ids), prompt=seq.num_prompt, target=seq.params.max_tokens, units=units)
        self._seqs[core] = seq
        self._core_of[seq] = core
        self.core.add(core)
        self._wake.set()
        self._publish()

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence (client went away); its blocks are freed at once, or at the end of the
        step under way (the model changes only between steps)."""
        if seq.done:
            return
        seq.aborted = True
        if self._in_step:
            self._aborted.append(seq)
        else:
            self._drop(seq)
        self._wake.set()

    @property
    def num_running(self) -> int:
        return self.core.num_running

    @property
    def num_waiting(self) -> int:
        return self.core.num_waiting

    @property
    def kv_usage(self) -> float:
        return self.core.kv.usage

    # ---- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            seconds = self.step_begin()
            if seconds == 0.0:
                # Nothing to run, or nothing fits until a sequence goes: wait for a change.
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._sleep(seconds * self._time_scale)
            finally:
                self.step_end()

    def step_begin(self) -> float:
        """Schedule a step (the model's `begin_step`); its duration in profile seconds, 0.0 if none."""
        seconds = self.core.begin_step(self._clock())
        self._in_step = seconds > 0.0
        self._count()
        return seconds

    def step_end(self) -> None:
        """Finish the step: the model advances, then every advanced sequence samples its token."""
        self._in_step = False
        now = self._clock()
        _, done = self.core.end_step(now)
        self.steps += 1
        for core in [*self.core.running, *done]:
            seq = self._seqs.get(core)
            if seq is None or seq.aborted:
                continue
            if self.core.output_tokens(core) > seq.num_output:
                self._sample(core, seq, now, finished=core in done)
            self._cache_blocks(core, seq)
        for core in done:
            self._forget(core)
        for seq in self._aborted:
            self._drop(seq)
        self._aborted.clear()
        self._count()
        self._publish()

    # ---- helpers -------------------------------------------------------------------------------

    def _sample(self, core: Seq, seq: Sequence, now: float, *, finished: bool) -> None:
        p = seq.params
        token = self.model.next_token(
            seq.tokens,
            temperature=p.temperature,
            rng=seq.rng,
            allow_eos=not p.ignore_eos and seq.num_output >= p.min_tokens,
        )
        seq.tokens.append(token)
        self.metrics.generation_tokens.inc()
        if seq.first_token_at is None:
            seq.first_token_at = now
            self.metrics.ttft.observe(now - seq.arrival)
            self.metrics.prompt_tokens.inc(seq.num_prompt)  # as vLLM: the whole prompt, at its first token
        finish, stop_reason = self._check_stop(seq, token)
        if finish is None and finished:
            finish = "length"  # max_tokens or the context limit: the model's own target
        self._emit(seq, token, finish, stop_reason)
        if finish is not None:
            seq.finish_reason = finish
            if not finished:
                self.core.stop(core)
                self._forget(core)
            self.metrics.e2e.observe(now - seq.arrival)
            self.metrics.finished(finish)

    def _cache_blocks(self, core: Seq, seq: Sequence) -> None:
        """Cache the blocks the sampled tokens filled (their KV is computed one step after sampling)."""
        bs = self.limits.block_size
        while core in self.core.running:
            known = len(core.units)
            end = (known + 1) * bs
            if self.core.computed_tokens(core) < end or len(seq.tokens) < end:
                return
            parent = core.units[-1].hash if core.units else 0
            (h,) = block_hashes(seq.tokens[:end], bs, start=known, parent=parent)
            self.core.cache_block(core, h)
            if len(core.units) == known:
                return  # the model declined (its prompt units are not all computed yet)

    def _drop(self, seq: Sequence) -> None:
        core = self._core_of.get(seq)
        if core is not None:
            self.core.stop(core)
            self._forget(core)
        self._count()
        self._publish()

    def _forget(self, core: Seq) -> None:
        seq = self._seqs.pop(core, None)
        if seq is not None:
            self._core_of.pop(seq, None)

    def _count(self) -> None:
        """Carry the model's counters (prefix queries and hits in tokens, preemptions) into the metrics."""
        now = (self.core.prefix_queries, self.core.prefix_hits, self.core.preemptions)
        queries, hits, preemptions = (a - b for a, b in zip(now, self._counted, strict=True))
        if queries:
            self.metrics.prefix_queries.inc(queries)
        if hits:
            self.metrics.prefix_hits.inc(hits)
        if preemptions:
            self.metrics.preemptions.inc(preemptions)
        self._counted = now

    def _check_stop(self, seq: Sequence, token: int) -> tuple[str | None, str | int | None]:
        p = seq.params
        if token == self.tokenizer.eos_token_id and not p.ignore_eos:
            return "stop", None
        if token in p.stop_token_ids:
            return "stop", token
        before = len(seq.text)
        seq.text += self.tokenizer.decode([token])
        for stop in p.stop:
            at = seq.text.find(stop, max(0, before - len(stop) + 1))
            if at >= 0:
                seq.text = seq.text[: at + len(stop) if p.include_stop_str_in_output else at]
                return "stop", stop
        return None, None

    def _emit(self, seq: Sequence, token: int, finish: str | None, stop_reason: str | int | None) -> None:
        limit = len(seq.text)
        p = seq.params
        if finish is None and p.stop and not p.include_stop_str_in_output:
            # Hold back text that could still turn out to be the start of a stop string.
            limit = max(seq.emitted_chars, limit - (max(len(s) for s in p.stop) - 1))
        text = seq.text[seq.emitted_chars : limit]
        seq.emitted_chars = limit
        seq.sink.put_nowait(TokenEvent(seq.index, (token,), text, finish, stop_reason))

    def _publish(self) -> None:
        self.metrics.running.set(self.core.num_running)
        self.metrics.waiting.set(self.core.num_waiting)
        self.metrics.kv_usage.set(self.core.kv.usage)
