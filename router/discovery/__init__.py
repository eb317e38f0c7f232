"""Discovery: where the instances are. One interface, a static and a Kubernetes implementation.

A discovery pushes the complete current set of `InstanceSpec`s to a callback whenever it changes;
the router diffs it into its instance table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from flotilla.router.instances import InstanceSpec

OnUpdate = Callable[[Sequence[InstanceSpec]], None]


class Discovery(Protocol):
    async def run(self, on_update: OnUpdate) -> None:
        """Push the instance set now and on every change; return only when cancelled (or static)."""
        ...
