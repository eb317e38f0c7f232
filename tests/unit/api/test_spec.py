"""The spec models: defaults, camelCase, and the cross-field rules mirrored from CEL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from flotilla.api import DEFAULT_ENGINE_IMAGE, InferenceFleetSpec, InferenceFleetStatus


def _spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": {"name": "llama", "source": "meta-llama/Llama-3.1-8B-Instruct"}}
    base.update(over)
    return base


def test_minimal_spec_gets_defaults() -> None:
    spec = InferenceFleetSpec.model_validate(_spec())
    assert spec.replicas == 1
    assert spec.engine.image == DEFAULT_ENGINE_IMAGE
    assert spec.resources.gpus == 1
    assert spec.placement.strategy == "pack"
    assert spec.rollout.max_surge == 1 and spec.rollout.max_unavailable == 0


def test_wire_form_is_camel_case_and_round_trips() -> None:
    spec = InferenceFleetSpec.model_validate(
        _spec(
            engine={"tensorParallelSize": 2, "maxNumSeqs": 64, "extraArgs": ["--dtype=half"]},
            resources={"gpus": 4, "gpuProduct": "NVIDIA-H100-80GB-HBM3", "memory": "64Gi"},
            rollout={"maxSurge": "25%", "maxUnavailable": 1},
            router={"policy": "predicted_load", "sliceTokens": 128, "predictor": {"name": "ranker"}},
            priority={"className": "high"},
        )
    )
    wire = spec.to_wire()
    assert wire["engine"]["tensorParallelSize"] == 2
    assert wire["rollout"]["maxSurge"] == "25%"
    assert wire["router"]["sliceTokens"] == 128
    assert "modelCache" not in wire["engine"], "unset optionals are omitted, not null"
    assert InferenceFleetSpec.model_validate(wire) == spec


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"replicas": 3, "minReplicas": 4}, "minReplicas"),
        ({"replicas": 5, "maxReplicas": 4}, "maxReplicas"),
        ({"engine": {"tensorParallelSize": 4}, "resources": {"gpus": 2}}, "tensorParallelSize"),
        ({"engine": {"tensorParallelSize": 2}, "resources": {"gpus": 0}}, "tensorParallelSize"),
        ({"engine": {"extraArgs": ["--max-model-len=4096"]}}, "--max-model-len"),
        ({"replicas": -1}, "replicas"),
        ({"placement": {"strategy": "scatter"}}, "strategy"),
        ({"rollout": {"maxSurge": "ten"}}, "maxSurge"),
        ({"resources": {"memory": "lots"}}, "memory"),
        ({"engine": {"gpuMemoryUtilization": 0}}, "gpuMemoryUtilization"),
        ({"unknownField": 1}, "unknownField"),
        ({"podLabels": {"flotilla.dev/tier": "9"}}, "reserved prefix"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        InferenceFleetSpec.model_validate(_spec(**over))


def test_model_is_required() -> None:
    with pytest.raises(ValidationError, match="model"):
        InferenceFleetSpec.model_validate({})


def test_status_round_trip() -> None:
    status = InferenceFleetStatus.model_validate(
        {
            "replicas": 2,
            "readyReplicas": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Scaling"}],
            "instances": [{"index": 0, "pod": "f-0-abc", "revision": "r1", "ready": True}],
        }
    )
    assert status.to_wire()["readyReplicas"] == 1
    assert status.conditions[0].type == "Ready"
