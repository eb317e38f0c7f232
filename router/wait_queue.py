"""The ordered wait queue every queue order is built on: tiers, a score with aging, due times.

It has the shape of the router's `WaitQueue` plug-in (push/remove/rekey/peek/pop with `now` passed
in, never read, so tests and the fleet simulator control time). Three functions given at
construction say how to order an item:

- `tier_of(item)`: a strict tier, higher first (a client's priority: `hints.py`). Tiers are
  strict, as Dynamo's `strict_priority` and Kubernetes' pod priority: a lower tier waits while a
  higher one has work, up to its due time.
- `score_of(item)`: lower first within a tier (predicted output, work, attained service; a
  constant for arrival order). Aging as in Fu et al. 2024's starvation guard, in seconds, not
  scheduler steps: the key is `score + aging_per_s * arrival`, i.e. a request's score minus what it
  has waited (times the rate) compared against later arrivals.
- `due_of(item)`: seconds after its arrival by which the item should leave the queue (a client's
  TTFT target less its expected prefill), or None. Every item is due by `starvation_s` at the
  latest. A due item goes before any item that is not due, earliest due first (EDF), whatever its
  tier and score: so no item waits past `starvation_s` plus the time to serve the items that fell
  due before it, and an item with a TTFT target leaves the queue in time for it when the fleet can
  serve the due items at all.

With one tier and no targets the due times are arrival + `starvation_s`, so the due items leave in
arrival order: the guard of the earlier shortest-predicted-first queue, unchanged.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

K = TypeVar("K", bound=Hashable)


class DueParams(BaseModel):
    """The starvation bound alone (the arrival-order queue: aging means nothing there)."""

    model_config = ConfigDict(extra="forbid")

    starvation_s: float = Field(10.0, gt=0.0, description="wait after which a request goes first")


class QueueOrderParams(DueParams):
    aging_per_s: float = Field(
        20.0, ge=0.0, description="score units (e.g. tokens) forgiven per second waited"
    )


@dataclass(order=True)
class _Entry(Generic[K]):
    key: tuple[float, float]
    seq: int
    item: K = field(compare=False)


@dataclass
class _Live:
    arrival: float
    key_seq: int
    """Sequence number of the item's live entry in the score heap (a rekey makes a new one)."""
    due_seq: int
    due_in: float
    """Seconds after arrival the item falls due (compared as a wait, not a sum, so a run's
    result does not hang on the rounding of arrival + due_in)."""


def _none(item: object) -> None:
    return None


def _zero(item: object) -> int:
    return 0


class OrderedQueue(Generic[K]):
    """A priority queue of waiting requests (see the module docstring).

    The score is read at push and again at `rekey` (a request's learned prediction landed after it
    was queued with a fallback); the tier and due time are read once, at push."""

    def __init__(
        self,
        score_of: Callable[[K], float],
        params: QueueOrderParams | None = None,
        *,
        tier_of: Callable[[K], int] = _zero,
        due_of: Callable[[K], float | None] = _none,
    ) -> None:
        self.score_of = score_of
        self.params = params or QueueOrderParams()
        self._tier_of = tier_of
        self._due_of = due_of
        self._by_key: list[_Entry[K]] = []
        self._by_due: list[tuple[float, int, K]] = []
        self._live: dict[K, _Live] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, item: object) -> bool:
        return item in self._live

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _push_key(self, item: K, arrival: float, seq: int) -> None:
        key = (-float(self._tier_of(item)), self.score_of(item) + self.params.aging_per_s * arrival)
        heapq.heappush(self._by_key, _Entry(key, seq, item))

    def push(self, item: K, now: float) -> None:
        if item in self._live:
            raise KeyError(f"{item!r} is already queued")
        seq = self._next()
        wanted = self._due_of(item)
        due_in = (
            self.params.starvation_s if wanted is None else min(max(0.0, wanted), self.params.starvation_s)
        )
        self._live[item] = _Live(now, seq, seq, due_in)
        heapq.heappush(self._by_due, (now + due_in, seq, item))
        self._push_key(item, now, seq)

    def rekey(self, item: K) -> None:
        """Re-read the item's score; its arrival (aging) and due time are kept."""
        live = self._live.get(item)
        if live is None:
            return
        live.key_seq = self._next()  # the old entry is now stale
        self._push_key(item, live.arrival, live.key_seq)
        self._compact()

    def remove(self, item: K) -> None:
        """Drop a request (cancelled, timed out; absent is fine); its heap entries are skipped lazily."""
        if self._live.pop(item, None) is None:
            return
        self._compact()

    def _compact(self) -> None:
        if len(self._by_key) > 2 * len(self._live) + 64:
            self._by_key = [e for e in self._by_key if self._key_live(e)]
            heapq.heapify(self._by_key)
        if len(self._by_due) > 2 * len(self._live) + 64:
            self._by_due = [e for e in self._by_due if self._due_live(e)]
            heapq.heapify(self._by_due)

    def _key_live(self, entry: _Entry[K]) -> bool:
        live = self._live.get(entry.item)
        return live is not None and live.key_seq == entry.seq

    def _due_live(self, entry: tuple[float, int, K]) -> bool:
        live = self._live.get(entry[2])
        return live is not None and live.due_seq == entry[1]

    def peek(self, now: float) -> K | None:
        if not self._live:
            return None
        while not self._due_live(self._by_due[0]):
            heapq.heappop(self._by_due)
        item = self._by_due[0][2]
        live = self._live[item]
        if now - live.arrival >= live.due_in:
            return item
        while not self._key_live(self._by_key[0]):
            heapq.heappop(self._by_key)
        return self._by_key[0].item

    def pop(self, now: float) -> K:
        item = self.peek(now)
        if item is None:
            raise IndexError("pop from an empty queue")
        del self._live[item]
        return item

    def waiting_s(self, item: K, now: float) -> float:
        return now - self._live[item].arrival
