"""The CRD on a real API server: defaults, printer columns, the scale subresource, and invalid
specs refused with the offending field named (OpenAPI validation and CEL rules)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from flotilla.api import DEFAULT_ENGINE_IMAGE
from flotilla.localcluster.kubectl import Kubectl, KubectlError

pytestmark = pytest.mark.e2e


def manifest(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "InferenceFleet",
        "metadata": {"name": name},
        "spec": {"model": {"name": "tiny", "source": "org/tiny"}, **spec},
    }
    return yaml.safe_dump(body)


def test_defaults_are_applied_by_the_server(crd: str, kubectl: Kubectl, namespace: str) -> None:
    k = kubectl.in_namespace(namespace)
    k.apply(manifest("defaults"))
    fleet = k.json("get", "inferencefleet", "defaults")
    spec = fleet["spec"]
    assert spec["replicas"] == 1
    assert spec["engine"]["image"] == DEFAULT_ENGINE_IMAGE
    assert spec["engine"]["tensorParallelSize"] == 1
    assert spec["resources"]["gpus"] == 1
    assert spec["placement"] == {"strategy": "pack", "topologyKey": "kubernetes.io/hostname", "mode": "soft"}
    assert spec["rollout"] == {"maxSurge": 1, "maxUnavailable": 0}
    # Short name and printer columns.
    table = k("get", "fleet")
    assert table.split()[:4] == ["NAME", "MODEL", "REPLICAS", "READY"]
    assert "defaults" in table and "tiny" in table


def test_scale_subresource(crd: str, kubectl: Kubectl, namespace: str) -> None:
    k = kubectl.in_namespace(namespace)
    k.apply(manifest("scaled", replicas=2, maxReplicas=4))
    k("scale", "fleet/scaled", "--replicas=4")
    assert k.json("get", "fleet", "scaled")["spec"]["replicas"] == 4
    scale = json.loads(
        k("get", "--raw", f"/apis/flotilla.dev/v1alpha1/namespaces/{namespace}/inferencefleets/scaled/scale")
    )
    assert scale["spec"]["replicas"] == 4
    with pytest.raises(KubectlError, match="replicas must not exceed maxReplicas"):
        k("scale", "fleet/scaled", "--replicas=5")


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"replicas": 3, "minReplicas": 4}, "spec.minReplicas", "minReplicas must not exceed replicas"),
        ({"replicas": 5, "maxReplicas": 4}, "spec.replicas", "replicas must not exceed maxReplicas"),
        (
            {"engine": {"tensorParallelSize": 4}, "resources": {"gpus": 2}},
            "spec.resources.gpus",
            "multiple of engine.tensorParallelSize",
        ),
        ({"engine": {"extraArgs": ["--max-model-len=4096"]}}, "spec.engine.extraArgs", "typed field"),
        ({"engine": {"maxNumSeqs": 256, "maxNumBatchedTokens": 128}}, "spec.engine.maxNumBatchedTokens", ""),
        ({"rollout": {"maxSurge": 0, "maxUnavailable": "0%"}}, "spec.rollout.maxUnavailable", "both be zero"),
        ({"rollout": {"maxSurge": "lots"}}, "spec.rollout.maxSurge", ""),
        ({"replicas": -1}, "spec.replicas", ""),
        ({"placement": {"strategy": "scatter"}}, "spec.placement.strategy", "Unsupported value"),
        ({"resources": {"memory": "lots"}}, "spec.resources.memory", ""),
        ({"priority": {"tier": 3, "className": "high"}}, "spec.priority.className", "not both"),
        ({"podLabels": {"flotilla.dev/tier": "9"}}, "spec.podLabels", "reserved prefix"),
        ({"resources": {"gpus": 0, "gpuProduct": "H100"}}, "spec.resources.gpuProduct", ""),
        ({"router": {"policy": "least_reqest"}}, "spec.router.policy", "Unsupported value"),
        ({"router": {"params": {"choices": 2}}}, "spec.router.params", "params need a policy"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(  # noqa: PLR0917
    crd: str, kubectl: Kubectl, namespace: str, spec: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(KubectlError) as refused:
        kubectl.in_namespace(namespace).apply(manifest("invalid", **spec))
    text = str(refused.value)
    assert "Invalid value" in text or "Unsupported value" in text or "Required value" in text, text
    assert field in text, text
    assert message in text, text


def test_missing_model_is_refused(crd: str, kubectl: Kubectl, namespace: str) -> None:
    body = {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "InferenceFleet",
        "metadata": {"name": "x"},
        "spec": {},
    }
    with pytest.raises(KubectlError, match=r"spec\.model: Required value"):
        kubectl.in_namespace(namespace).apply(yaml.safe_dump(body))
