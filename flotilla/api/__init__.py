"""The InferenceFleet API: pydantic models of the custom resource, its CRD, and shared names.

Every component reads fleets and fleet pods through these types and the names in `labels`; the
CRD in `crds/` is generated from them (`python -m flotilla.api.crdgen --write`).
"""

from flotilla.api import labels
from flotilla.api.spec import (
    DEFAULT_ENGINE_IMAGE,
    EngineSpec,
    InferenceFleetSpec,
    ModelSpec,
    PlacementSpec,
    PrioritySpec,
    ResourcesSpec,
    RolloutSpec,
    RouterSpec,
)
from flotilla.api.status import Condition, InferenceFleetStatus, InstanceStatus

__all__ = [
    "DEFAULT_ENGINE_IMAGE",
    "Condition",
    "EngineSpec",
    "InferenceFleetSpec",
    "InferenceFleetStatus",
    "InstanceStatus",
    "ModelSpec",
    "PlacementSpec",
    "PrioritySpec",
    "ResourcesSpec",
    "RolloutSpec",
    "RouterSpec",
    "labels",
]
