"""Render a fleet replica's pod from the spec: a pure function, the operator's only pod template.

The pod spec part (container, volumes, scheduling) is hashed into the revision: a change there is
rolled out by replacing pods. Labels and annotations that other components read but that do not
need a restart (tier, placement hints, router policy) are kept out of the hash and patched in place.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from flotilla.api import InferenceFleetSpec, labels
from flotilla.api.spec import ModelCacheSpec
from flotilla.operator.config import RenderConfig

SERVER_COMMAND = ("python3", "-m", "vllm.entrypoints.openai.api_server")
PVC_SCHEME = "pvc://"
MODEL_SOURCE_MOUNT = "/models-src"
DEFAULT_CACHE = ModelCacheSpec()
ANNOTATION_FAILURES = f"{labels.GROUP}/failures"


@dataclass(frozen=True)
class FleetRef:
    """The identity of a fleet object, for owner references and names."""

    namespace: str
    name: str
    uid: str


def selector_labels(fleet_name: str) -> dict[str, str]:
    """Labels that select every pod of a fleet (the scale subresource's selector)."""
    return {labels.LABEL_FLEET: fleet_name}


def selector_string(fleet_name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(fleet_name).items())


def engine_args(spec: InferenceFleetSpec, model_path: str) -> list[str]:
    """vLLM server flags derived from the spec's typed fields, then the user's extra args."""
    eng = spec.engine
    args = [
        "--model",
        model_path,
        "--served-model-name",
        spec.model.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(labels.ENGINE_PORT),
        "--tensor-parallel-size",
        str(eng.tensor_parallel_size),
    ]
    if spec.model.revision:
        args += ["--revision", spec.model.revision]
    if spec.model.tokenizer:
        args += ["--tokenizer", spec.model.tokenizer]
    if eng.max_model_len is not None:
        args += ["--max-model-len", str(eng.max_model_len)]
    if eng.max_num_seqs is not None:
        args += ["--max-num-seqs", str(eng.max_num_seqs)]
    if eng.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(eng.max_num_batched_tokens)]
    if eng.enable_prefix_caching is not None:
        args.append("--enable-prefix-caching" if eng.enable_prefix_caching else "--no-enable-prefix-caching")
    if eng.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", repr(eng.gpu_memory_utilization)]
    return args + list(eng.extra_args)


def _model_source(spec: InferenceFleetSpec) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The --model value, and the volume and mount a pvc:// source needs."""
    source = spec.model.source
    if not source.startswith(PVC_SCHEME):
        return source, [], []
    claim, _, path = source.removeprefix(PVC_SCHEME).partition("/")
    volume = {"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    mount = {"name": "model-source", "mountPath": MODEL_SOURCE_MOUNT, "readOnly": True}
    return f"{MODEL_SOURCE_MOUNT}/{path}".rstrip("/"), [volume], [mount]


def _env(spec: InferenceFleetSpec, cache_path: str) -> list[dict[str, Any]]:
    # Weights and compiler caches go to the cache volume: the root filesystem is not the user's.
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": f"{cache_path}/huggingface"},
        {"name": "XDG_CACHE_HOME", "value": f"{cache_path}/xdg"},
        {"name": "VLLM_CACHE_ROOT", "value": f"{cache_path}/vllm"},
    ]
    user = {e.name for e in spec.engine.env}
    env = [e for e in env if e["name"] not in user]
    return env + [e.to_wire() for e in spec.engine.env]


def _resources(spec: InferenceFleetSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    res = spec.resources
    if res.gpus:
        limits[labels.GPU_RESOURCE] = str(res.gpus)
        requests[labels.GPU_RESOURCE] = str(res.gpus)
    for key, value in (("cpu", res.cpu), ("memory", res.memory)):
        if value is not None:
            limits[key] = str(value)
            requests[key] = str(value)
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _probes(spec: InferenceFleetSpec) -> dict[str, Any]:
    def probe(period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": labels.HEALTH_PATH, "port": labels.ENGINE_PORT_NAME},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 5,
        }

    # The startup probe holds off liveness while the model loads, however long that takes.
    startup_period = 10
    return {
        "startupProbe": probe(startup_period, max(1, math.ceil(spec.engine.startup_timeout_seconds / 10))),
        "readinessProbe": probe(5, 3),
        "livenessProbe": probe(10, 6),
    }


def _tolerations(spec: InferenceFleetSpec, config: RenderConfig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if spec.resources.gpus:
        # GPU nodes are commonly tainted so that only GPU workloads land there.
        out.append({"key": labels.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if config.tolerate_kwok:
        out.append(
            {
                "key": labels.KWOK_TAINT_KEY,
                "operator": "Equal",
                "value": labels.KWOK_TAINT_VALUE,
                "effect": "NoSchedule",
            }
        )
    return out + [t.to_wire() for t in spec.tolerations]


def pod_spec(spec: InferenceFleetSpec, config: RenderConfig) -> dict[str, Any]:
    """The pod spec every replica of this spec runs: what the revision hash covers."""
    model_path, src_volumes, src_mounts = _model_source(spec)
    cache = spec.engine.model_cache or DEFAULT_CACHE
    if cache.claim_name:
        cache_volume: dict[str, Any] = {
            "name": "model-cache",
            "persistentVolumeClaim": {"claimName": cache.claim_name, "readOnly": cache.read_only},
        }
    else:
        empty: dict[str, Any] = {}
        if cache.size_limit is not None:
            empty["sizeLimit"] = str(cache.size_limit)
        cache_volume = {"name": "model-cache", "emptyDir": empty}
    container: dict[str, Any] = {
        "name": labels.ENGINE_CONTAINER_NAME,
        "image": spec.engine.image,
        "imagePullPolicy": spec.engine.image_pull_policy,
        "command": list(spec.engine.command or SERVER_COMMAND),
        "args": engine_args(spec, model_path),
        "env": _env(spec, cache.mount_path),
        "ports": [{"name": labels.ENGINE_PORT_NAME, "containerPort": labels.ENGINE_PORT, "protocol": "TCP"}],
        "resources": _resources(spec),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "model-cache", "mountPath": cache.mount_path, "readOnly": cache.read_only},
            *src_mounts,
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
        },
        **_probes(spec),
    }
    node_selector = dict(spec.node_selector)
    if spec.resources.gpu_product:
        node_selector[labels.GPU_PRODUCT_LABEL] = spec.resources.gpu_product
    out: dict[str, Any] = {
        "schedulerName": config.scheduler_name,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "fsGroup": config.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.resources.shm_size)}},
            cache_volume,
            *src_volumes,
        ],
        "tolerations": _tolerations(spec, config),
    }
    if node_selector:
        out["nodeSelector"] = node_selector
    if spec.priority.class_name:
        out["priorityClassName"] = spec.priority.class_name
    return out


def revision_of(spec: InferenceFleetSpec, config: RenderConfig) -> str:
    """A short stable hash of the pod spec: pods of another revision are rolled."""
    canonical = json.dumps(pod_spec(spec, config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def mutable_metadata(
    fleet_name: str, spec: InferenceFleetSpec, tier: int
) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations that are patched onto live pods when the spec changes them."""
    pod_labels = {
        **spec.pod_labels,
        labels.LABEL_TIER: str(tier),
        labels.LABEL_MODEL: _label_value(spec.model.name),
    }
    annotations = {
        **spec.pod_annotations,
        labels.ANNOTATION_PLACEMENT: spec.placement.strategy,
        labels.ANNOTATION_TOPOLOGY_KEY: spec.placement.topology_key,
        labels.ANNOTATION_PLACEMENT_MODE: spec.placement.mode,
    }
    return pod_labels, annotations


def _label_value(value: str) -> str:
    # Label values: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends (ASCII only: isalnum()
    # alone lets "è" through, and the API server then refuses every pod of the fleet).
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "-" for c in value)[:63]
    return cleaned.strip("-_.") or "model"


def render_pod(
    fleet: FleetRef,
    spec: InferenceFleetSpec,
    *,
    index: int,
    revision: str,
    tier: int,
    failures: int,
    config: RenderConfig,
) -> dict[str, Any]:
    """The full pod manifest of replica `index` (created with generateName)."""
    mut_labels, mut_annotations = mutable_metadata(fleet.name, spec, tier)
    pod_labels = {
        **selector_labels(fleet.name),
        labels.LABEL_REPLICA: str(index),
        labels.LABEL_REVISION: revision,
        labels.LABEL_MANAGED_BY: labels.MANAGED_BY,
        **mut_labels,
    }
    annotations = dict(mut_annotations)
    if failures:
        annotations[ANNOTATION_FAILURES] = str(failures)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{fleet.name}-{index}-",
            "namespace": fleet.namespace,
            "labels": pod_labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": labels.API_VERSION,
                    "kind": labels.KIND,
                    "name": fleet.name,
                    "uid": fleet.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec(spec, config),
    }
