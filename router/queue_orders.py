"""Queue orders: the plug-ins that order one model's waiting requests, for the router and the simulator.

Pure and synchronous (no asyncio): `now` is passed in, never read, so the fleet simulator drives
the very orders the router runs. An order is generic in what it queues (the router queues its
`admission.Waiter`s, the simulator request indices) and reads a waiting item's `RequestFeatures`,
where it needs them, through the `features_of` function it is built with.

- `fcfs`: arrival order.
- `shortest_predicted_first`: predicted output tokens, smallest first, with aging.
- `shortest_work_first`: the same, on the work the request puts on an engine: its predicted
  output plus its prompt weighted by the prefill cost of a token relative to a decode token
  (`prompt_token_weight`; the default is least_work's H100 weights, 21.0 us / 119.6 us). On
  long-prompt traces (Mooncake: ~9k prompt tokens, ~360 output) the prompt, known exactly, is
  most of a request's work, and output length alone orders the queue almost at random.
- `least_attained_service` (LAS, prediction-free): the output the request has already received,
  least first, with aging. A new request has received nothing, so with slicing a continuation
  slice yields to new work and to shorter-running requests at each slice boundary (the slice is
  the preemption unit, as in Cheng et al. 2024's SCLS); without slicing it is arrival order.

Every order is an `wait_queue.OrderedQueue`: the client's priority (`hints.py`) is a strict tier
above the order, and a request falls due (goes first, earliest due first) after `starvation_s` or
when its TTFT target, less the expected prefill of its prompt, runs out, whichever is sooner.

Orders are registered by name with a pydantic params model (`extra="forbid"`), like policies:
`QueueOrderRegistry.factory(name, params)` validates once and returns a builder, so a bad name or
parameter fails when the configuration is read, not when the first request waits.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, Field

from flotilla.api.routing import DEFAULT_DECODE_TOKEN_S, DEFAULT_PREFILL_TOKEN_S
from flotilla.router.policies.base import RequestFeatures
from flotilla.router.wait_queue import DueParams, OrderedQueue, QueueOrderParams

K = TypeVar("K", bound=Hashable)

FeaturesOf = Callable[[Any], RequestFeatures]
"""A waiting item's features (its prediction included)."""


class WaitQueue(Protocol[K]):
    """The order in which one model's waiting requests are served."""

    def __len__(self) -> int: ...

    def push(self, item: K, now: float) -> None: ...

    def remove(self, item: K) -> None: ...

    def rekey(self, item: K) -> None:
        """The item's score changed (its learned prediction landed): reorder it, keeping its place
        in arrival order."""
        ...

    def peek(self, now: float) -> K | None: ...

    def pop(self, now: float) -> K: ...


class WorkOrderParams(QueueOrderParams):
    prompt_token_weight: float = Field(
        DEFAULT_PREFILL_TOKEN_S / DEFAULT_DECODE_TOKEN_S,
        ge=0.0,
        description="decode tokens' worth of engine time per prompt token",
    )


@dataclass(frozen=True)
class QueueOrderPlugin:
    params: type[BaseModel]
    build: Callable[[BaseModel, FeaturesOf], WaitQueue[Any]]


QueueFactory = Callable[[FeaturesOf], WaitQueue[Any]]
"""Builds one model's queue, given how to read its items' features."""


class QueueOrderRegistry:
    def __init__(self) -> None:
        self._plugins: dict[str, QueueOrderPlugin] = {}

    def register(
        self, name: str, params: type[BaseModel], build: Callable[[BaseModel, FeaturesOf], WaitQueue[Any]]
    ) -> None:
        if name in self._plugins:
            raise ValueError(f"queue order {name!r} already registered")
        self._plugins[name] = QueueOrderPlugin(params, build)

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def factory(self, name: str, params: Mapping[str, Any] | None = None) -> QueueFactory:
        """The builder of the named order with validated params; raises ValueError on a bad name
        and pydantic's ValidationError (a ValueError) on bad params."""
        plugin = self._plugins.get(name)
        if plugin is None:
            raise ValueError(f"unknown queue order {name!r}; known: {', '.join(self.names())}")
        validated = plugin.params.model_validate(dict(params or {}))

        def build(features_of: FeaturesOf) -> WaitQueue[Any]:
            return plugin.build(validated, features_of)

        return build


def _ordered(
    score_of: Callable[[RequestFeatures], float], params: DueParams, features_of: FeaturesOf
) -> WaitQueue[Any]:
    """One order's queue: the client's priority as the tier, its TTFT target (less the expected
    prefill of its prompt) as the due time, `score_of` within the tier."""
    if not isinstance(params, QueueOrderParams):  # arrival order: nothing to age
        params = QueueOrderParams(aging_per_s=0.0, starvation_s=params.starvation_s)

    def due_of(item: Any) -> float | None:
        f = features_of(item)
        return None if f.ttft_slo_s is None else f.ttft_slo_s - f.prompt_tokens * DEFAULT_PREFILL_TOKEN_S

    return OrderedQueue(
        lambda item: score_of(features_of(item)),
        params,
        tier_of=lambda item: features_of(item).priority,
        due_of=due_of,
    )


def _fcfs(params: BaseModel, features_of: FeaturesOf) -> WaitQueue[Any]:
    assert isinstance(params, DueParams)
    return _ordered(lambda f: 0.0, params, features_of)


def _shortest_predicted_first(params: BaseModel, features_of: FeaturesOf) -> WaitQueue[Any]:
    assert isinstance(params, QueueOrderParams)
    return _ordered(lambda f: f.predicted_output_tokens or 0.0, params, features_of)


def _shortest_work_first(params: BaseModel, features_of: FeaturesOf) -> WaitQueue[Any]:
    assert isinstance(params, WorkOrderParams)
    weight = params.prompt_token_weight
    return _ordered(
        lambda f: (f.predicted_output_tokens or 0.0) + weight * f.prompt_tokens, params, features_of
    )


def _least_attained_service(params: BaseModel, features_of: FeaturesOf) -> WaitQueue[Any]:
    assert isinstance(params, QueueOrderParams)
    return _ordered(lambda f: float(f.attained_tokens), params, features_of)


def default_queue_orders() -> QueueOrderRegistry:
    """`fcfs`, `shortest_predicted_first`, `shortest_work_first` and `least_attained_service`
    (each with the client's priority tiers and TTFT due times, and a starvation bound:
    `wait_queue`)."""
    registry = QueueOrderRegistry()
    registry.register("fcfs", DueParams, _fcfs)
    registry.register("shortest_predicted_first", QueueOrderParams, _shortest_predicted_first)
    registry.register("shortest_work_first", WorkOrderParams, _shortest_work_first)
    registry.register("least_attained_service", QueueOrderParams, _least_attained_service)
    return registry
