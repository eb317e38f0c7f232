"""Balancing policies, registered by name with a pydantic params model (extra="forbid").

`registry.build("least_request", {"choices": 2})` validates the params against the policy's own
model and returns a fresh policy object; a fleet selects one with `spec.router.policy`/`params`.
The built-in policies' names and params models are the API's (`flotilla.api.routing`), so that
the CRD and the operator refuse what the router would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from flotilla.api.routing import DEFAULT_POLICY
from flotilla.router.policies.base import (
    InstanceView,
    Observer,
    Policy,
    RequestFeatures,
    Snapshot,
    rank_by_cost,
)
from flotilla.router.policies.least_work import LeastWork
from flotilla.router.policies.predicted_load import PredictedLoad
from flotilla.router.policies.prefix_affinity import PrefixAffinity
from flotilla.router.policies.simple import KvUtilization, LeastRequest, RoundRobin


@dataclass(frozen=True)
class PolicyPlugin:
    name: str
    params: type[BaseModel]
    factory: Callable[[Any], Policy]


class PolicyRegistry:
    """Policies by name; built once at start-up and passed in (no module-level mutable state)."""

    def __init__(self) -> None:
        self._plugins: dict[str, PolicyPlugin] = {}

    def register(self, name: str, params: type[BaseModel], factory: Callable[[Any], Policy]) -> None:
        if name in self._plugins:
            raise ValueError(f"policy {name!r} registered twice")
        self._plugins[name] = PolicyPlugin(name, params, factory)

    def params_model(self, name: str) -> type[BaseModel]:
        return self._plugins[name].params

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def build(self, name: str, params: Mapping[str, Any] | None = None) -> Policy:
        """A new policy object; raises KeyError (unknown name) or pydantic.ValidationError (bad params)."""
        plugin = self._plugins.get(name)
        if plugin is None:
            raise KeyError(f"unknown policy {name!r}; known: {self.names()}")
        return plugin.factory(plugin.params.model_validate(dict(params or {})))


def default_registry() -> PolicyRegistry:
    registry = PolicyRegistry()
    for cls in (RoundRobin, LeastRequest, KvUtilization, PrefixAffinity, PredictedLoad, LeastWork):
        registry.register(cls.name, cls.Params, cls)
    return registry


__all__ = [
    "DEFAULT_POLICY",
    "InstanceView",
    "Observer",
    "Policy",
    "PolicyRegistry",
    "RequestFeatures",
    "Snapshot",
    "default_registry",
    "rank_by_cost",
]
