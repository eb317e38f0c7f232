"""Names every component agrees on: the resource's identity, pod labels and annotations, ports.

The operator writes these onto the pods it creates; the placement scheduler and the router read
them back. They are a wire contract between separately deployed processes, so they live here, in
one place, and change only with a new API version.
"""

from __future__ import annotations

from typing import Final

# --- The custom resource -----------------------------------------------------------------------
GROUP: Final = "flotilla.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "InferenceFleet"
LIST_KIND: Final = "InferenceFleetList"
PLURAL: Final = "inferencefleets"
SINGULAR: Final = "inferencefleet"
SHORT_NAMES: Final = ("fleet", "fleets")
CATEGORIES: Final = ("flotilla", "all")
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# --- Scheduling ---------------------------------------------------------------------------------
# Fleet pods name this scheduler, so the default kube-scheduler leaves them to flotilla's solver.
SCHEDULER_NAME: Final = "flotilla"
GPU_RESOURCE: Final = "nvidia.com/gpu"
# The node label that names the GPU model (set by NVIDIA's GPU feature discovery).
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
# The taint KWOK's fake nodes carry; the operator tolerates it only when told to (tests, benchmarks).
KWOK_TAINT_KEY: Final = "kwok.x-k8s.io/node"
KWOK_TAINT_VALUE: Final = "fake"

# --- Pod labels (selectable) ---------------------------------------------------------------------
# The fleet's name: the selector of the fleet's pods (also the scale subresource's selector).
LABEL_FLEET: Final = f"{GROUP}/fleet"
# The replica index, "0".."replicas-1": stable across replacements, so a replacement keeps its slot.
LABEL_REPLICA: Final = f"{GROUP}/replica"
# The revision hash of the pod template the pod was rendered from; a rollout replaces other values.
LABEL_REVISION: Final = f"{GROUP}/revision"
# The integer priority tier (decimal string, larger is more important). The placement solver reads
# it to decide who may preempt whom; it is set from spec.priority.tier or the PriorityClass's value.
LABEL_TIER: Final = f"{GROUP}/tier"
# Marks pods managed by flotilla (any fleet), for cheap cluster-wide watches.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "flotilla"
# The served model name (spec.model.name); the router discovers instances by it.
LABEL_MODEL: Final = f"{GROUP}/model"

# --- Pod annotations (not selectable) -----------------------------------------------------------
# Gangs: pods sharing a GANG value are placed all together or not at all; GANG_SIZE is the member
# count (a decimal string). A replica that spans several pods is one gang.
ANNOTATION_GANG: Final = f"{GROUP}/gang"
ANNOTATION_GANG_SIZE: Final = f"{GROUP}/gang-size"
# Placement preference of the fleet (spec.placement): "pack" or "spread" over TOPOLOGY_KEY, with
# PLACEMENT_MODE "hard" (a constraint) or "soft" (an objective term).
ANNOTATION_PLACEMENT: Final = f"{GROUP}/placement"
ANNOTATION_TOPOLOGY_KEY: Final = f"{GROUP}/topology-key"
ANNOTATION_PLACEMENT_MODE: Final = f"{GROUP}/placement-mode"
# The fleet's router settings, copied onto pods so a router can work from pods alone.

# --- The engine ---------------------------------------------------------------------------------
ENGINE_PORT: Final = 8000
ENGINE_PORT_NAME: Final = "http"
ENGINE_CONTAINER_NAME: Final = "engine"
HEALTH_PATH: Final = "/health"
