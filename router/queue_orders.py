"""Queue orders: the plug-ins that order one model's waiting requests, for the router and the simulator.

Pure and synchronous (no asyncio): `now` is passed in, never read, so the fleet simulator drives
the very orders the router runs. An order is generic in what it queues (the router queues its
`admission.Waiter`s, the simulator request indices) and reads a waiting item's `RequestFeatures`,
where it needs them, through the `features_of` function it is built with.

- `fcfs`: arrival order.
- `shortest_predicted_first`: predicted output tokens, smallest first, with aging and a
  starvation bound (`predictor.queue_order`).
- `shortest_work_first`: the same, on the work the request puts on an engine: its predicted
  output plus its prompt weighted by the prefill cost of a token relative to a decode token
  (`prompt_token_weight`; the default is least_work's H100 weights, 21.0 us / 119.6 us). On
  long-prompt traces (Mooncake: ~9k prompt tokens, ~360 output) the prompt, known exactly, is
  most of a request's work, and output length alone orders the queue almost at random.

Orders are registered by name with a pydantic params model (`extra="forbid"`), like policies:
`QueueOrderRegistry.factory(name, params)` validates once and returns a builder, so a bad name or
parameter fails when the configuration is read, not when the first request waits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from flotilla.api.routing import DEFAULT_DECODE_TOKEN_S, DEFAULT_PREFILL_TOKEN_S
from flotilla.router.policies.base import RequestFeatures
from flotilla.router.predictor.queue_order import QueueOrderParams, ShortestPredictedFirst

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


class FcfsQueue(Generic[K]):
    """First come, first served."""

    def __init__(self) -> None:
        self._items: OrderedDict[K, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: K, now: float) -> None:
        self._items[item] = None

    def remove(self, item: K) -> None:
        self._items.pop(item, None)

    def rekey(self, item: K) -> None:
        pass

    def peek(self, now: float) -> K | None:
        return next(iter(self._items), None)

    def pop(self, now: float) -> K:
        return self._items.popitem(last=False)[0]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _fcfs(params: BaseModel, features_of: FeaturesOf) -> WaitQueue[Any]:
    return FcfsQueue()


def _shortest_predicted_first(params: BaseModel, features_of: FeaturesOf) -> WaitQueue[Any]:
    assert isinstance(params, QueueOrderParams)

    def predicted(item: Any) -> float:
        return features_of(item).predicted_output_tokens or 0.0

    return ShortestPredictedFirst(predicted, params)


def _shortest_work_first(params: BaseModel, features_of: FeaturesOf) -> WaitQueue[Any]:
    assert isinstance(params, WorkOrderParams)
    weight = params.prompt_token_weight

    def work(item: Any) -> float:
        f = features_of(item)
        return (f.predicted_output_tokens or 0.0) + weight * f.prompt_tokens

    return ShortestPredictedFirst(work, params)


def default_queue_orders() -> QueueOrderRegistry:
    """`fcfs`, `shortest_predicted_first` and `shortest_work_first` (aging and a starvation bound:
    `predictor.queue_order`)."""
    registry = QueueOrderRegistry()
    registry.register("fcfs", NoParams, _fcfs)
    registry.register("shortest_predicted_first", QueueOrderParams, _shortest_predicted_first)
    registry.register("shortest_work_first", WorkOrderParams, _shortest_work_first)
    return registry
