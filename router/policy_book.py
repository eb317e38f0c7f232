"""Each model's policy object, built from its routing settings and rebuilt only when they change.

A configured policy that cannot be built is never silent (see `PolicyBook`); the same check runs
earlier in the operator (`flotilla.api.routing.params_problem`, condition RoutingAccepted), but a
router may carry plug-ins the API does not list, and an old CRD may let a bad name through.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flotilla.router.metrics import RouterMetrics
from flotilla.router.model_routing import ModelRouting
from flotilla.router.policies import Policy, PolicyRegistry

log = logging.getLogger("flotilla.router.policy_book")


@dataclass(frozen=True)
class Rejection:
    policy: str
    field: str
    """The fleet field at fault: spec.router.policy or spec.router.params."""
    message: str


class PolicyBook:
    """The policy object of each model, rebuilt only when its configured name or params change.

    A configured policy that cannot be built (a misspelt name, params its model refuses) is never
    silent: the model runs the router's default, a warning is logged once per configuration, and
    `flotilla_router_policy_rejected` is 1 until the configuration is fixed."""

    def __init__(
        self,
        registry: PolicyRegistry,
        default: str,
        default_params: Mapping[str, Any],
        *,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self._registry = registry
        self._default: tuple[str, Mapping[str, Any]] = (default, dict(default_params))
        registry.build(default, default_params)  # fail fast on a bad default
        # Per model: the (name, params) its policy object was built from, and the object.
        self._built: dict[str, tuple[tuple[str, Mapping[str, Any]], Policy]] = {}
        self._metrics = metrics
        self.rejected: dict[str, Rejection] = {}
        """Per model, the configuration refused now (what the warning and the gauge say)."""

    def policy_for(self, model: str, routing: ModelRouting) -> Policy:
        wanted = (routing.policy, routing.params) if routing.policy else self._default
        cached = self._built.get(model)
        if cached is not None and cached[0] == wanted:
            return cached[1]
        self._unflag(model)
        try:
            policy = self._registry.build(*wanted)
        except (KeyError, ValueError) as e:  # pydantic's ValidationError is a ValueError
            field = "spec.router.policy" if isinstance(e, KeyError) else "spec.router.params"
            message = f"{field}: policy {wanted[0]!r} rejected, using {self._default[0]!r}: {e}"
            self.rejected[model] = Rejection(wanted[0], field, message)
            log.warning(
                "fleet policy rejected, balancing with the default",
                extra={"model": model, "policy": wanted[0], "field": field, "error": str(e)},
            )
            if self._metrics is not None:
                self._metrics.policy_rejected.labels(model, wanted[0], field).set(1)
            policy = self._registry.build(*self._default)
        self._built[model] = (wanted, policy)
        return policy

    def _unflag(self, model: str) -> None:
        gone = self.rejected.pop(model, None)
        if gone is not None and self._metrics is not None:
            self._metrics.policy_rejected.remove(model, gone.policy, gone.field)
