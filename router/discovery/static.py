"""Static discovery: the instances and per-model routing listed in the router's configuration file."""

from __future__ import annotations

from flotilla.router.config import StaticDiscoveryConfig
from flotilla.router.discovery import Discovered, OnUpdate
from flotilla.router.instances import InstanceSpec


def static_discovered(config: StaticDiscoveryConfig) -> Discovered:
    instances = tuple(
        InstanceSpec(
            id=inst.name or f"{inst.model}-{i}",
            url=inst.url.rstrip("/"),
            model=inst.model,
            max_inflight=inst.max_inflight,
        )
        for i, inst in enumerate(config.instances)
    )
    return Discovered(instances, dict(config.models))


class StaticDiscovery:
    def __init__(self, config: StaticDiscoveryConfig) -> None:
        self._discovered = static_discovered(config)

    async def run(self, on_update: OnUpdate) -> None:
        on_update(self._discovered)
