"""The continuous-batching loop: vLLM v1's scheduler in miniature, timed by a step-time profile.

Every step schedules running sequences first (one token each when decoding, the next chunk when a
long prompt is still prefilling) and then admits waiting ones while `max_num_seqs` and the token
budget (`max_num_batched_tokens`, i.e. chunked prefill) allow. Prompts reuse cached prefix blocks;
when KV blocks run out the most recently admitted sequence is preempted and recomputed later, as
vLLM does. The step then takes ``profile.step_time(...) * time_scale`` seconds of (injectable) sleep,
after which every sequence whose tokens are all computed samples its next token.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flotilla.enginesim.kvcache import BlockPool, block_hashes
from flotilla.enginesim.metrics import EngineMetrics
from flotilla.enginesim.sequence import Sequence, TokenEvent
from flotilla.enginesim.textmodel import TextModel
from flotilla.enginesim.tokenizer import Tokenizer
from flotilla.profiles import EngineLimits, StepTimeProfile

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class StepWork:
    """The work of one step, in the units of `StepTimeProfile.step_time`."""

    prefill_tokens: int = 0
    prefill_attention_pairs: int = 0
    decode_seqs: int = 0
    kv_tokens_read: int = 0


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
        self.pool = BlockPool(limits.kv_cache_blocks, limits.block_size)
        self._time_scale = time_scale
        self._sleep = sleep
        self._clock = clock
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._wake = asyncio.Event()
        self.steps = 0

    # ---- requests in and out -------------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)
        self._wake.set()
        self._publish_gauges()

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence (client went away); its blocks are freed at once."""
        if seq.done:
            return
        seq.aborted = True
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._free(seq)
        self._wake.set()
        self._publish_gauges()

    # ---- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            scheduled, work = self.schedule()
            if not scheduled:
                # Nothing fits right now (all blocks held by sequences that were just aborted or
                # preempted); wait for a change instead of spinning.
                self._wake.clear()
                await self._wake.wait()
                continue
            seconds = self.profile.step_time(
                prefill_tokens=work.prefill_tokens,
                prefill_attention_pairs=work.prefill_attention_pairs,
                decode_seqs=work.decode_seqs,
                kv_tokens_read=work.kv_tokens_read,
            )
            await self._sleep(seconds * self._time_scale)
            self.apply(scheduled)
            self.steps += 1

    def schedule(self) -> tuple[list[tuple[Sequence, int]], StepWork]:
        """Choose this step's sequences and token counts (mutates block tables and queues)."""
        budget = self.limits.max_num_batched_tokens
        scheduled: list[tuple[Sequence, int]] = []
        preempted = False
        for seq in list(self.running):
            if budget == 0:
                break
            if seq not in self.running:  # preempted by an earlier sequence this step
                continue
            n = min(seq.num_tokens - seq.num_computed, budget)
            while not self._grow(seq, seq.num_computed + n):
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq in self.running:
                scheduled.append((seq, n))
                budget -= n
        while not preempted and self.waiting and len(self.running) < self.limits.max_num_seqs and budget > 0:
            seq = self.waiting[0]
            cached = self._lookup_prefix(seq)
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._grow(seq, seq.num_computed + n):
                self.pool.release(cached)
                seq.blocks, seq.hashes, seq.num_computed = [], [], 0
                break
            self.metrics.prefix_queries.inc(seq.num_tokens)
            self.metrics.prefix_hits.inc(len(cached) * self.limits.block_size)
            self.waiting.popleft()
            self.running.append(seq)
            scheduled.append((seq, n))
            budget -= n
        self._publish_gauges()
        return scheduled, self._work(scheduled)

    def apply(self, scheduled: list[tuple[Sequence, int]]) -> None:
        """Finish a step: advance computed tokens, cache full blocks, sample, emit, retire."""
        now = self._clock()
        bs = self.limits.block_size
        for seq, n in scheduled:
            if seq.done:
                continue
            seq.num_computed += n
            new_hashes = block_hashes(
                seq.tokens[: seq.num_computed],
                bs,
                start=len(seq.hashes),
                parent=seq.hashes[-1] if seq.hashes else 0,
            )
            for h in new_hashes:
                self.pool.register(seq.blocks[len(seq.hashes)], h)
                seq.hashes.append(h)
            if seq.num_output == 0:
                self.metrics.prompt_tokens.inc(n)
            if seq.num_computed == seq.num_tokens:
                self._sample(seq, now)
        self._publish_gauges()

    # ---- helpers -------------------------------------------------------------------------------

    def _work(self, scheduled: list[tuple[Sequence, int]]) -> StepWork:
        prefill = pairs = decodes = kv_read = 0
        for seq, n in scheduled:
            if n == 1 and seq.num_output > 0:
                decodes += 1
                kv_read += seq.num_computed + 1
            else:
                prefill += n
                pairs += n * (seq.num_computed + n)
        return StepWork(prefill, pairs, decodes, kv_read)

    def _lookup_prefix(self, seq: Sequence) -> list[int]:
        """Reuse cached blocks for the prompt; at least one token is always recomputed (as vLLM)."""
        if seq.num_computed or seq.blocks:
            return []
        hashes = block_hashes(seq.tokens[: seq.num_tokens - 1], self.limits.block_size)
        cached = self.pool.cached_prefix(hashes)
        self.pool.take(cached)
        seq.blocks = list(cached)
        seq.hashes = hashes[: len(cached)]
        seq.num_computed = len(cached) * self.limits.block_size
        return cached

    def _grow(self, seq: Sequence, num_tokens: int) -> bool:
        need = -(-num_tokens // self.limits.block_size) - len(seq.blocks)
        if need <= 0:
            return True
        blocks = self.pool.allocate(need)
        if blocks is None:
            return False
        seq.blocks.extend(blocks)
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._free(seq)
        seq.num_computed = 0
        self.waiting.appendleft(seq)
        self.metrics.preemptions.inc()

    def _free(self, seq: Sequence) -> None:
        self.pool.release(seq.blocks)
        seq.blocks, seq.hashes = [], []

    def _sample(self, seq: Sequence, now: float) -> None:
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
        finish, stop_reason = self._check_stop(seq, token)
        if finish is None and (seq.num_output >= p.max_tokens or seq.num_tokens >= self.limits.max_model_len):
            finish = "length"
        self._emit(seq, token, finish, stop_reason)
        if finish is not None:
            seq.finish_reason = finish
            self.running.remove(seq)
            self._free(seq)
            self.metrics.e2e.observe(now - seq.arrival)
            self.metrics.finished(finish)

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

    def _publish_gauges(self) -> None:
        self.metrics.running.set(len(self.running))
        self.metrics.waiting.set(len(self.waiting))
        self.metrics.kv_usage.set(self.pool.usage)
