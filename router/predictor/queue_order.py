"""Shortest-predicted-first ordering of waiting requests, with aging so that nothing starves.

It has the shape of the router's `WaitQueue` plug-in (push/remove/peek/pop with `now` passed in,
never read, so tests and the fleet simulator control time); the score of an item comes from a
function given at construction, e.g. the predicted output tokens of a waiting request.

Two mechanisms, as in Fu et al. 2024's starvation guard but in seconds, not scheduler steps:

- aging: a request's key is `score + aging_per_s * arrival`, i.e. its score minus what it has waited
  (times the rate) compared against later arrivals: the longer it waits, the earlier it comes;
- a hard bound: a request that has waited `starvation_s` is served before any unstarved one, in
  arrival order. So the wait of any request is bounded by starvation_s plus the time to serve the
  starved requests that arrived before it.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

K = TypeVar("K", bound=Hashable)


class QueueOrderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aging_per_s: float = Field(
        20.0, ge=0.0, description="score units (e.g. tokens) forgiven per second waited"
    )
    starvation_s: float = Field(10.0, gt=0.0, description="wait after which a request goes first")


@dataclass(order=True)
class _Entry(Generic[K]):
    key: float
    seq: int
    item: K = field(compare=False)


class ShortestPredictedFirst(Generic[K]):
    """A priority queue of waiting requests; `score_of(item)` is larger for longer predicted output.

    The score is read at push, and again at `rekey` (a request's learned prediction landed after it
    was queued with a fallback).
    """

    def __init__(self, score_of: Callable[[K], float], params: QueueOrderParams | None = None) -> None:
        self.score_of = score_of
        self.params = params or QueueOrderParams()
        self._heap: list[_Entry[K]] = []
        # item -> (arrival time, sequence number of its live heap entry); insertion = arrival order.
        self._live: OrderedDict[K, tuple[float, int]] = OrderedDict()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, item: object) -> bool:
        return item in self._live

    def push(self, item: K, now: float) -> None:
        if item in self._live:
            raise KeyError(f"{item!r} is already queued")
        score = self.score_of(item)
        self._seq += 1
        self._live[item] = (now, self._seq)
        heapq.heappush(self._heap, _Entry(score + self.params.aging_per_s * now, self._seq, item))

    def rekey(self, item: K) -> None:
        """Re-read the item's score; its arrival time (aging, starvation order) is kept."""
        if item not in self._live:
            return
        arrived, _ = self._live[item]
        self._seq += 1
        self._live[item] = (arrived, self._seq)  # same place in arrival order; old entry now stale
        heapq.heappush(
            self._heap, _Entry(self.score_of(item) + self.params.aging_per_s * arrived, self._seq, item)
        )
        self._compact()

    def remove(self, item: K) -> None:
        """Drop a request (cancelled, timed out; absent is fine); its heap entry is skipped lazily."""
        if self._live.pop(item, None) is None:
            return
        self._compact()

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in self._heap if self._live.get(e.item, (0.0, -1))[1] == e.seq]
            heapq.heapify(self._heap)

    def peek(self, now: float) -> K | None:
        if not self._live:
            return None
        oldest, (arrived, _) = next(iter(self._live.items()))
        if now - arrived >= self.params.starvation_s:
            return oldest
        while self._live.get(self._heap[0].item, (0.0, -1))[1] != self._heap[0].seq:
            heapq.heappop(self._heap)
        return self._heap[0].item

    def pop(self, now: float) -> K:
        item = self.peek(now)
        if item is None:
            raise IndexError("pop from an empty queue")
        del self._live[item]
        return item

    def waiting_s(self, item: K, now: float) -> float:
        return now - self._live[item][0]
