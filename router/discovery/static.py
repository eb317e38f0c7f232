"""Static discovery: the instances listed in the router's configuration file."""

from __future__ import annotations

from flotilla.router.config import StaticDiscoveryConfig
from flotilla.router.discovery import OnUpdate
from flotilla.router.instances import InstanceSpec


def static_specs(config: StaticDiscoveryConfig) -> list[InstanceSpec]:
    specs = []
    for i, inst in enumerate(config.instances):
        routing = config.models.get(inst.model)
        specs.append(
            InstanceSpec(
                id=inst.name or f"{inst.model}-{i}",
                url=inst.url.rstrip("/"),
                model=inst.model,
                policy=routing.policy if routing else None,
                params=tuple(sorted(routing.params.items())) if routing else (),
                max_inflight=inst.max_inflight,
                predictor=routing.predictor if routing else None,
                slice_tokens=(routing.slice_tokens or 0) if routing else 0,
            )
        )
    return specs


class StaticDiscovery:
    def __init__(self, config: StaticDiscoveryConfig) -> None:
        self._specs = static_specs(config)

    async def run(self, on_update: OnUpdate) -> None:
        on_update(self._specs)
