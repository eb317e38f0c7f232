"""Slice-level scheduling in the simulator, driven by the router's own slicing decisions.

The live router (`flotilla.router.slicing.continuation`) sends a request asking for up to M tokens as
engine calls of at most S tokens (`slicing.slice_budget`); a slice that stops by its own limit with
tokens left (`slicing.continues`) goes back through admission with `prompt = prompt +
generated`, where the policy ranks the instances and `slicing.place_next_slice` decides whether
it stays (its KV is cached there) or moves (and is prefilled again). This module keeps the
per-request state of that loop and calls those functions unchanged; the event loop
(`simulator.py`) does the queueing and dispatch exactly as for whole requests.

Modelling choices, where the router's engines would do something the trace cannot tell:
- A slice's engine call is a new sequence whose prompt is the context so far. Its shared prompt
  units are the request's; the blocks past them (the unshared rest of the prompt, and generated
  tokens) are cached when a slice that will continue finishes, as one request-unique unit per
  slice (vLLM caches every full block, with hashes of their content; generated text is unique to
  the request). So the next slice on the same engine hits them, and one elsewhere recomputes them.
- The engine stops a slice at the request's true length (its EOS), reported as `stop`; a slice
  that reached its budget with true tokens left is `length` and continues.
- Slices follow each other with no gap: the HTTP round trip between slices is not modelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flotilla.router.policies import InstanceView, RequestFeatures
from flotilla.router.slicing.decisions import (
    RebalanceParams,
    continues,
    place_next_slice,
    slice_budget,
    slice_features,
)
from flotilla.sim.engine import Seq
from flotilla.sim.request import PrefixUnit, SimRequest

Steer = Callable[[list[InstanceView]], list[InstanceView]]


class Slicer:
    """Per-request slicing state: tokens generated so far, where the last slice ran, cached tails."""

    def __init__(
        self,
        requests: Sequence[SimRequest],
        units: Sequence[tuple[PrefixUnit, ...]],
        *,
        slice_tokens: int,
        rebalance: RebalanceParams,
    ) -> None:
        if slice_tokens <= 0:
            raise ValueError("slice_tokens must be positive (0 means no Slicer)")
        n = len(requests)
        self._requests = requests
        self.slice_tokens = slice_tokens
        self.rebalance = rebalance
        self.generated = [0] * n
        self.current: list[int | None] = [None] * n
        self.units: list[tuple[PrefixUnit, ...]] = list(units)
        self.slices = [0] * n
        self.moves = [0] * n
        self.budget = [0] * n
        """max_tokens of the slice in flight (or about to be dispatched)."""

    def total(self, i: int) -> int:
        """Tokens the request will produce in all: its true length, or its max_tokens if less."""
        r = self._requests[i]
        out = max(1, r.output_tokens)
        return out if r.max_tokens is None else min(out, r.max_tokens)

    def remaining(self, i: int) -> int | None:
        """What is left of the client's own limit (None: the client set none), as the router tracks it."""
        m = self._requests[i].max_tokens
        return None if m is None else m - self.generated[i]

    def next_slice(self, i: int, features: RequestFeatures, predicted: float) -> RequestFeatures:
        """The features the router dispatches the next slice with (`continuation.SliceRunner.pieces`)."""
        budget = slice_budget(self.slice_tokens, self.remaining(i))
        self.budget[i] = budget
        return slice_features(
            features,
            predicted,
            slice_tokens=self.slice_tokens,
            budget=budget,
            context_tokens=self._requests[i].prompt_tokens + self.generated[i],
            generated=self.generated[i],
        )

    def steer(self, i: int) -> Steer | None:
        """The router's between-slice placement for a continuation; None for a first slice."""
        current = self.current[i]
        if current is None:
            return None
        stay, budget = f"i{current:03d}", self.budget[i]
        context = self._requests[i].prompt_tokens + self.generated[i]
        params = self.rebalance

        def steer(ranked: list[InstanceView]) -> list[InstanceView]:
            return place_next_slice(stay, ranked, slice_tokens=budget, context_tokens=context, params=params)

        return steer

    def seq(self, i: int, instance: int, mark: float, priority: float) -> Seq:
        """The engine call of the next slice on `instance`."""
        r = self._requests[i]
        if self.current[i] is not None and self.current[i] != instance:
            self.moves[i] += 1
        self.slices[i] += 1
        left = self.total(i) - self.generated[i]
        target = min(self.budget[i], left)
        return Seq(
            idx=i,
            prompt=r.prompt_tokens + self.generated[i],
            target=target,
            units=self.units[i],
            mark=mark,
            priority=priority,
            # Only a slice that will be continued leaves its output cached: with S past every
            # length, slicing changes nothing (and the engines' caches are those of whole requests).
            tail_salt=(r.id + 1) if target < left else 0,
        )

    def finished(self, i: int, s: Seq, instance: int) -> bool:
        """Account a finished slice; True if the request continues with another."""
        self.generated[i] += s.out
        reason = "stop" if self.generated[i] >= self.total(i) else "length"
        if s.tail is not None:
            self.units[i] = (*s.units, s.tail)
        self.current[i] = instance
        return continues(reason, s.out, self.budget[i], self.remaining(i))

    def failed_over(self, i: int, s: Seq) -> bool:
        """Its engine died: keep what it streamed; True if the request goes on elsewhere (failover)."""
        self.generated[i] += s.out
        self.current[i] = None  # no stay/move decision: the policy picks among the living
        return self.generated[i] < self.total(i)
