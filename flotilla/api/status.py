"""The InferenceFleet status: what the operator observed, written only by the operator.

`replicas` and `selector` back the scale subresource (so `kubectl scale`, HPA and KEDA work);
`instances` lets people and tools see which pod serves which replica slot, where, and at what address.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from flotilla.api.base import ApiModel

ConditionType = Literal["Ready", "Progressing", "Degraded", "Unschedulable", "RoutingAccepted"]
CONDITION_TYPES: tuple[ConditionType, ...] = (
    "Ready",
    "Progressing",
    "Degraded",
    "Unschedulable",
    "RoutingAccepted",
)


class Condition(ApiModel):
    """One aspect of the fleet's state, in the Kubernetes condition convention."""

    type: ConditionType
    """Ready: at least spec.replicas pods of the current revision are ready. Progressing: a scale or
    rollout is under way. Degraded: pods fail or are missing. Unschedulable: pods wait for a node.
    RoutingAccepted: spec.router's params configure its policy (False: the router ignores the
    fleet's policy, balancing with its own configured one, until they are fixed)."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: Annotated[str, Field(max_length=1024)] = ""
    """CamelCase machine-readable reason of the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable details."""
    last_transition_time: str | None = None
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The metadata.generation the condition was computed for."""


class InstanceStatus(ApiModel):
    """One replica slot and the pod that fills it."""

    index: int
    """Replica index (the flotilla.dev/replica label)."""
    pod: str
    """Pod name."""
    revision: str
    """Revision hash of the pod's template."""
    phase: str | None = None
    """Pod phase (Pending, Running, Succeeded, Failed)."""
    ready: bool = False
    """The pod's Ready condition."""
    node: str | None = None
    """Node the pod is bound to."""
    address: str | None = None
    """host:port of the engine's OpenAI-compatible endpoint."""


class InferenceFleetStatus(ApiModel):
    """Observed state of a fleet."""

    observed_generation: int | None = None
    """The metadata.generation this status was computed for."""
    replicas: int = 0
    """Pods that exist for the fleet, of any revision, not being deleted."""
    ready_replicas: int = 0
    """Of those, pods that are ready."""
    updated_replicas: int = 0
    """Of those, pods of the current revision."""
    selector: str | None = None
    """Label selector of the fleet's pods (for the scale subresource)."""
    current_revision: str | None = None
    """Revision hash of the current spec; pods of other revisions are rolled."""
    conditions: list[Condition] = []
    """Ready, Progressing, Degraded and Unschedulable."""
    instances: list[InstanceStatus] = []
    """The fleet's pods by replica index."""
