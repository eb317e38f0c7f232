"""Queue orders: the plug-ins that order one model's waiting requests, for the router and the simulator.

Pure and synchronous (no asyncio): `now` is passed in, never read, so the fleet simulator drives
the very orders the router runs. An order is generic in what it queues (the router queues its
`admission.Waiter`s, the simulator request indices) and reads a waiting item's score, where it
needs one, through the `score_of` function it is built with (the predicted output tokens).

Orders are registered by name with a pydantic params model (`extra="forbid"`), like policies:
`QueueOrderRegistry.factory(name, params)` validates once and returns a builder, so a bad name or
parameter fails when the configuration is read, not when the first request waits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from flotilla.router.predictor.queue_order import QueueOrderParams, ShortestPredictedFirst

K = TypeVar("K", bound=Hashable)

ScoreOf = Callable[[Any], float]
"""A waiting item's score: larger for longer predicted output."""


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


@dataclass(frozen=True)
class QueueOrderPlugin:
    params: type[BaseModel]
    build: Callable[[BaseModel, ScoreOf], WaitQueue[Any]]


QueueFactory = Callable[[ScoreOf], WaitQueue[Any]]
"""Builds one model's queue, given how to score its items."""


class QueueOrderRegistry:
    def __init__(self) -> None:
        self._plugins: dict[str, QueueOrderPlugin] = {}

    def register(
        self, name: str, params: type[BaseModel], build: Callable[[BaseModel, ScoreOf], WaitQueue[Any]]
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

        def build(score_of: ScoreOf) -> WaitQueue[Any]:
            return plugin.build(validated, score_of)

        return build


def _fcfs(params: BaseModel, score_of: ScoreOf) -> WaitQueue[Any]:
    return FcfsQueue()


def _shortest_predicted_first(params: BaseModel, score_of: ScoreOf) -> WaitQueue[Any]:
    assert isinstance(params, QueueOrderParams)
    return ShortestPredictedFirst(score_of, params)


def default_queue_orders() -> QueueOrderRegistry:
    """`fcfs`, and `shortest_predicted_first` (aging and a starvation bound: `predictor.queue_order`)."""
    registry = QueueOrderRegistry()
    registry.register("fcfs", NoParams, _fcfs)
    registry.register("shortest_predicted_first", QueueOrderParams, _shortest_predicted_first)
    return registry
