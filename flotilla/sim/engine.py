"""One simulated engine: vLLM v1's continuous-batching step as a pure, synchronous state machine.

The semantics are `flotilla.enginesim.engine.Engine.schedule/apply` (and vLLM v1's): each step
first schedules the running sequences in admission order (one token per decoding sequence, the next
chunk for a prompt still prefilling), then admits waiting ones while `max_num_seqs` and the token
budget (chunked prefill) allow, reusing cached prefix units; when KV blocks run out the most
recently admitted sequence is preempted and recomputed later. Optionally the waiting queue is
ordered by priority, and the victim is then the lowest-priority sequence (vLLM's priority mode).
A step lasts `profile.step_time(...)`; at its end every sequence whose tokens are all computed
samples one token.

What makes it fast: decoding sequences are not touched every step. A decoder's computed tokens grow
by exactly one per step, so its state is kept as (value at step k0) + (k - k0), and the only
per-sequence work is at the steps where something happens to it (it needs a new KV block, it
finishes, it crosses its predicted length), which are known in advance and kept in per-step
buckets. A step therefore costs O(1) plus O(events), not O(batch). This works because at most one
sequence is ever partially prefilled and it is the last one admitted (the budget cut it), so every
decoder is scheduled in every step as long as max_num_seqs <= max_num_batched_tokens.

This is the one engine model of the project: `flotilla.enginesim` runs it under its asyncio clock
(sampling real tokens, caching the blocks they fill with `cache_block`, ending a sequence at an EOS
or a stop string or an abort with `stop`), and the fleet simulator runs it in virtual time.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from math import floor

from flotilla.profiles import EngineLimits, StepTimeProfile
from flotilla.sim.kv import KvModel
from flotilla.sim.request import PrefixUnit

Event = tuple["Seq", int]


@dataclass(slots=True, eq=False)
class Seq:
    """A request inside one engine. While `decoding`, `nc`/`out` hold their values at step `k0`."""

    idx: int
    prompt: int
    target: int
    """True output tokens: the engine stops after this many (as EOS would)."""
    units: tuple[PrefixUnit, ...] = ()
    mark: float = 0.0
    """Predicted output tokens the router charged for it (its accounting is kept here, see module doc)."""
    priority: float = 0.0
    out: int = 0
    nc: int = 0
    nblocks: int = 0
    private: int = 0
    held: list[int] = field(default_factory=list)
    next_unit: int = 0
    pos: int = 0
    epoch: int = 0
    k0: int = 0
    decoding: bool = False
    under: bool = False
    first_done: bool = False
    admitted_at: float = -1.0
    preemptions: int = 0
    hit_tokens: int = 0
    """Prompt tokens found in the prefix cache at its last admission."""
    tail_salt: int = 0
    """Non-zero for a slice that will be continued: when it finishes, its full blocks past `units`
    (the rest of its prompt and what it generated) are cached as one request-unique unit, so the
    next slice on this engine finds them (vLLM caches every full block; see `flotilla.sim.slices`)."""
    tail: PrefixUnit | None = None
    """The unit cached at its finish (set by the engine when `tail_salt` is)."""


class EngineModel:
    def __init__(
        self,
        profile: StepTimeProfile,
        limits: EngineLimits,
        *,
        priority: bool = False,
        preempt_lowest_priority: bool = True,
    ) -> None:
        """`priority`: admit by (priority, arrival) and, if `preempt_lowest_priority`, preempt the
        lowest-priority running sequence (vLLM's priority mode); otherwise FCFS."""
        if limits.max_num_seqs > limits.max_num_batched_tokens:
            # vLLM refuses the same configuration; the fast path below relies on it.
            raise ValueError(
                f"max_num_batched_tokens ({limits.max_num_batched_tokens}) must be at least"
                f" max_num_seqs ({limits.max_num_seqs})"
            )
        self._step_time = profile.step_time
        self.limits = limits
        self.bs = limits.block_size
        self.max_seqs = limits.max_num_seqs
        self.budget = limits.max_num_batched_tokens
        self.max_len = limits.max_model_len
        self.priority = priority
        self._victim_by_priority = priority and preempt_lowest_priority
        self.kv = KvModel(limits.kv_cache_blocks, limits.block_size)
        self.k = 0
        self.running: dict[Seq, None] = {}
        self._fifo: deque[Seq] = deque()
        self._heap: list[tuple[float, int, Seq]] = []
        self.pre: Seq | None = None
        self.n_dec = 0
        self._a_sum = 0  # sum over decoders of (nc at k0 - k0): their KV tokens are _a_sum + n_dec * k
        self.n_under = 0
        self.predicted_remaining = 0.0
        self._due: dict[int, list[Event]] = {}
        self._fin: dict[int, list[Event]] = {}
        self._cross: dict[int, list[Event]] = {}
        self._sched: list[tuple[Seq, int]] = []
        self._pos = 0
        self.last_work = (0, 0, 0, 0)
        self.steps = 0
        self.busy_s = 0.0
        self.preemptions = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.generated = 0
        self.prefill_tokens = 0
        """Prompt (and recomputed) tokens computed: re-prefills of moved slices and preemptions show here."""

    # ---- state a scrape reads ------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self._heap) if self.priority else len(self._fifo)

    @property
    def idle(self) -> bool:
        return not self.running and not self.num_waiting

    # ---- requests in ---------------------------------------------------------------------------

    def add(self, s: Seq) -> None:
        self.predicted_remaining += s.mark
        self._enqueue(s, front=False)

    def _enqueue(self, s: Seq, *, front: bool) -> None:
        if self.priority:
            heapq.heappush(self._heap, (s.priority, s.idx, s))
        elif front:
            self._fifo.appendleft(s)
        else:
            self._fifo.append(s)

    # ---- one step ------------------------------------------------------------------------------

    def begin_step(self, now: float) -> float:
        """Schedule the next step; its duration in seconds, or 0.0 when there is nothing to run."""
        k = self.k
        preempted = False
        due = self._due.pop(k, None)
        if due:
            if len(due) > 1:
                due.sort(key=lambda e: e[0].pos)
            for s, ep in due:
                if s.epoch != ep:
                    continue
                while not self.kv.allocate(1):
                    victim = self._victim()
                    self._preempt(victim, k)
                    preempted = True
                    if victim is s:
                        break
                else:
                    s.nblocks += 1
                    s.private += 1
                    self._at(self._due, k + self.bs, s)
        budget = self.budget - self.n_dec
        sched = self._sched
        sched.clear()
        prefill = pairs = 0
        pre = self.pre
        if pre is not None and budget > 0:
            n = min(pre.prompt + pre.out - pre.nc, budget)
            before = self.preemptions
            if self._grow_or_preempt(pre, pre.nc + n, k):
                sched.append((pre, n))
                budget -= n
                prefill += n
                pairs += n * (pre.nc + n)
            preempted = preempted or self.preemptions != before
        while not preempted and budget > 0 and len(self.running) < self.max_seqs:
            w = self._peek()
            if w is None:
                break
            num_tokens = w.prompt + w.out
            if w.nc == 0 and w.nblocks == 0:
                self._lookup(w, num_tokens)
            n = min(num_tokens - w.nc, budget)
            if not self._grow(w, w.nc + n):
                self._release(w)
                break
            self._pop()
            self.prefix_queries += num_tokens
            self.prefix_hits += w.hit_tokens
            self.running[w] = None
            w.pos = self._pos
            self._pos += 1
            if w.admitted_at < 0:
                w.admitted_at = now
            sched.append((w, n))
            budget -= n
            prefill += n
            pairs += n * (w.nc + n)
        n_dec = self.n_dec
        if not sched and n_dec == 0:
            return 0.0
        kv_read = self._a_sum + n_dec * k + n_dec
        self.last_work = (prefill, pairs, n_dec, kv_read)
        self.prefill_tokens += prefill
        seconds = self._step_time(
            prefill_tokens=prefill, prefill_attention_pairs=pairs, decode_seqs=n_dec, kv_tokens_read=kv_read
        )
        self.busy_s += seconds
        return seconds

    def end_step(self, now: float) -> tuple[list[Seq], list[Seq]]:
        """Finish the scheduled step: (sequences that got their first token, sequences that finished)."""
        k = self.k
        first: list[Seq] = []
        done: list[Seq] = []
        cross = self._cross.pop(k, None)
        if cross:
            for s, ep in cross:
                if s.epoch != ep:
                    continue
                if s.under:
                    s.under = False
                    self.n_under -= 1
                self.predicted_remaining -= s.mark - floor(s.mark)
        self.predicted_remaining -= self.n_under
        self.generated += self.n_dec
        fin = self._fin.pop(k, None)
        if fin:
            for s, ep in fin:
                if s.epoch != ep:
                    continue
                steps = k - s.k0 + 1
                self._stop_decoding(s)
                s.nc += steps
                s.out += steps
                self._finish(s)
                done.append(s)
        for s, n in self._sched:
            s.nc += n
            units = s.units
            while s.next_unit < len(units) and units[s.next_unit].end_token <= s.nc:
                u = units[s.next_unit]
                if self.kv.register(u.hash, u.blocks):
                    s.private -= u.blocks
                    s.held.append(u.hash)
                s.next_unit += 1
            if s.nc < s.prompt + s.out:
                self.pre = s
                continue
            if s is self.pre:
                self.pre = None
            self.predicted_remaining -= min(1.0, max(0.0, s.mark - s.out))
            s.out += 1
            self.generated += 1
            if not s.first_done:
                s.first_done = True
                first.append(s)
            if s.out >= s.target or s.prompt + s.out >= self.max_len:
                self._finish(s)
                done.append(s)
            else:
                self._start_decoding(s, k + 1)
        self._sched.clear()
        self.k = k + 1
        self.steps += 1
        return first, done

    # ---- decoders ------------------------------------------------------------------------------

    def _start_decoding(self, s: Seq, k0: int) -> None:
        s.decoding = True
        s.k0 = k0
        self.n_dec += 1
        self._a_sum += s.nc - k0
        self._at(self._due, k0 + s.nblocks * self.bs - s.nc, s)
        last = k0 + min(s.prompt + s.target, self.max_len) - s.prompt - s.out - 1
        self._at(self._fin, last, s)
        m = floor(s.mark)
        if s.out < m:
            s.under = True
            self.n_under += 1
        if s.out <= m and k0 + m - s.out <= last:
            self._at(self._cross, k0 + m - s.out, s)

    def _stop_decoding(self, s: Seq) -> None:
        s.decoding = False
        self.n_dec -= 1
        self._a_sum -= s.nc - s.k0
        if s.under:
            s.under = False
            self.n_under -= 1

    def _at(self, book: dict[int, list[Event]], step: int, s: Seq) -> None:
        bucket = book.get(step)
        if bucket is None:
            book[step] = [(s, s.epoch)]
        else:
            bucket.append((s, s.epoch))

    # ---- KV ------------------------------------------------------------------------------------

    def _lookup(self, s: Seq, num_tokens: int) -> None:
        """Reuse cached prefix units; at least one token is always recomputed (as vLLM)."""
        kv = self.kv
        for u in s.units:
            if u.end_token > num_tokens - 1 or not kv.is_cached(u.hash):
                break
            s.nblocks += kv.take(u.hash)
            s.held.append(u.hash)
            s.nc = u.end_token
            s.next_unit += 1
        s.hit_tokens = s.nc

    def _grow(self, s: Seq, num_tokens: int) -> bool:
        need = -(-num_tokens // self.bs) - s.nblocks
        if need <= 0:
            return True
        if not self.kv.allocate(need):
            return False
        s.nblocks += need
        s.private += need
        return True

    def _grow_or_preempt(self, s: Seq, num_tokens: int, k: int) -> bool:
        while not self._grow(s, num_tokens):
            victim = self._victim()
            self._preempt(victim, k)
            if victim is s:
                return False
        return True

    def _victim(self) -> Seq:
        if self._victim_by_priority:
            return max(self.running, key=lambda s: (s.priority, s.pos))
        return next(reversed(self.running))

    def _preempt(self, s: Seq, k: int) -> None:
        if s.decoding:
            self._stop_decoding(s)
            s.out += k - s.k0
            s.nc += k - s.k0
        if s is self.pre:
            self.pre = None
        del self.running[s]
        self._release(s)
        s.epoch += 1
        s.preemptions += 1
        self.preemptions += 1
        self._enqueue(s, front=True)

    def _finish(self, s: Seq) -> None:
        del self.running[s]
        if s.tail_salt:
            self._cache_tail(s)
        self._release(s)
        s.epoch += 1
        self.predicted_remaining -= max(0.0, s.mark - s.out)

    def _cache_tail(self, s: Seq) -> None:
        """Cache the full blocks after the last prefix unit as one unit chained to it (request-unique)."""
        last = s.units[-1] if s.units else None
        start = last.end_token if last is not None else 0
        end = s.nc // self.bs * self.bs
        blocks = (end - start) // self.bs
        if blocks <= 0 or s.next_unit < len(s.units) or blocks > s.private:
            return
        h = hash((last.hash if last is not None else 0, s.tail_salt, end)) & ((1 << 62) - 1)
        if self.kv.register(h, blocks):
            s.private -= blocks
            s.held.append(h)
            s.tail = PrefixUnit(h, blocks, end)

    def _release(self, s: Seq) -> None:
        self.kv.release(s.held, s.private)
        s.held, s.private, s.nblocks, s.nc, s.next_unit = [], 0, 0, 0, 0

    # ---- the waiting queue ---------------------------------------------------------------------

    def _peek(self) -> Seq | None:
        if self.priority:
            return self._heap[0][2] if self._heap else None
        return self._fifo[0] if self._fifo else None

    def _pop(self) -> None:
        if self.priority:
            heapq.heappop(self._heap)
        else:
            self._fifo.popleft()

    # ---- faults --------------------------------------------------------------------------------

    def kill(self) -> list[Seq]:
        """The engine dies between steps: every sequence it held, with the tokens it had produced
        (streamed to the router) by the last finished step; the engine is then empty."""
        lost = list(self.running)
        for s in lost:
            if s.decoding:
                self._stop_decoding(s)
                s.out += self.k - s.k0
        lost += [e[2] for e in self._heap] if self.priority else list(self._fifo)
        self.running.clear()
        self._fifo.clear()
        self._heap.clear()
        self.pre = None
        self._sched.clear()
        self._due.clear()
        self._fin.clear()
        self._cross.clear()
        self.predicted_remaining = 0.0
        self.kv = KvModel(self.limits.kv_cache_blocks, self.limits.block_size)
        return lost

    # ---- a real engine's hooks (between steps) ---------------------------------------------------

    def output_tokens(self, s: Seq) -> int:
        """Output tokens `s` has sampled so far (between steps)."""
        return s.out + (self.k - s.k0 if s.decoding else 0)

    def computed_tokens(self, s: Seq) -> int:
        """Tokens of `s` in KV now (between steps)."""
        return s.nc + (self.k - s.k0 if s.decoding else 0)

    def stop(self, s: Seq) -> None:
        """End `s` now, before its target (an EOS or a stop string was sampled, or the client went
        away), running or waiting; its blocks are released as at a finish. Between steps only."""
        if s in self.running:
            if s.decoding:
                self._stop_decoding(s)
                s.out += self.k - s.k0
                s.nc += self.k - s.k0
            if s is self.pre:
                self.pre = None
            self._finish(s)
            return
        if self.priority:
            kept = [e for e in self._heap if e[2] is not s]
            if len(kept) == len(self._heap):
                return
            self._heap = kept
            heapq.heapify(self._heap)
        elif s in self._fifo:
            self._fifo.remove(s)
        else:
            return  # finished already
        s.epoch += 1
        self.predicted_remaining -= max(0.0, s.mark - s.out)

    def cache_block(self, s: Seq, h: int) -> None:
        """The next block of `s` past its known units is full and computed (generated tokens a real
        engine knows only once sampled): cache it under the chained hash `h`, as vLLM caches every
        full block, so a later prompt that repeats the output finds it. Between steps only."""
        end = (len(s.units) and s.units[-1].end_token) + self.bs
        if s not in self.running or s.next_unit < len(s.units) or self.computed_tokens(s) < end:
            return
        s.units = (*s.units, PrefixUnit(h, 1, end))
        s.next_unit += 1
        if self.kv.register(h, 1):
            s.private -= 1
            s.held.append(h)
