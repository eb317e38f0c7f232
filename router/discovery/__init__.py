"""Discovery: where the instances are and how each model is routed. One interface, a static and a
Kubernetes implementation.

A discovery pushes the complete current state (`Discovered`) to a callback whenever it changes:
the instances, and each model's routing settings resolved once from its fleet's `spec.router` (or
the static configuration's `models:`). The router replaces its instance table with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from flotilla.router.instances import InstanceSpec
from flotilla.router.model_routing import ModelRouting


@dataclass(frozen=True)
class Discovered:
    instances: tuple[InstanceSpec, ...] = ()
    routing: Mapping[str, ModelRouting] = field(default_factory=dict)
    """Per model; a model absent here is routed with the router's defaults."""


OnUpdate = Callable[[Discovered], None]


class Discovery(Protocol):
    async def run(self, on_update: OnUpdate) -> None:
        """Push the discovered state now and on every change; return only when cancelled (or static)."""
        ...
