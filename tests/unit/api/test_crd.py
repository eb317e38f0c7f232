"""The generated CRD: in sync with the models, structural, and carrying its contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flotilla.api import crdgen, labels
from flotilla.api.structural import NotStructuralError, to_structural

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / crdgen.CRD_FILENAME


def _version(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version


def test_committed_crd_matches_models() -> None:
    assert CRD_PATH.read_text() == crdgen.render(), "crds/ drifted from flotilla/api: run `make crds`"


def test_check_mode_detects_drift(tmp_path: Path) -> None:
    assert crdgen.main(["--check", "--out-dir", str(tmp_path)]) == 1
    assert crdgen.main(["--write", "--out-dir", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out-dir", str(tmp_path)]) == 0


def _walk(node: dict[str, Any], path: str = "") -> list[str]:
    """Violations of the structural-schema rules (k8s.io/apiextensions-apiserver/pkg/apis/.../structural)."""
    errors: list[str] = []
    for bad in ("$ref", "$defs", "title", "oneOf", "allOf", "not", "const", "nullable"):
        if bad in node:
            errors.append(f"{path}: {bad}")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    if "type" not in node and not int_or_string and not node.get("x-kubernetes-preserve-unknown-fields"):
        errors.append(f"{path}: no type")
    if "anyOf" in node:
        if not int_or_string:
            errors.append(f"{path}: anyOf outside int-or-string")
        if node["anyOf"] != [{"type": "integer"}, {"type": "string"}]:
            errors.append(f"{path}: int-or-string anyOf must be exactly integer|string")
    if "properties" in node and "additionalProperties" in node:
        errors.append(f"{path}: properties with additionalProperties")
    if node.get("default", 0) is None:
        errors.append(f"{path}: null default")
    for name, sub in node.get("properties", {}).items():
        errors += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        errors += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        errors += _walk(node["additionalProperties"], f"{path}.*")
    return errors


def test_schema_is_structural() -> None:
    schema = _version(crdgen.build_crd())["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []


def test_subresources_names_and_columns() -> None:
    crd = crdgen.build_crd()
    assert crd["metadata"]["name"] == "inferencefleets.flotilla.dev"
    assert crd["spec"]["names"]["shortNames"][0] == "fleet"
    version = _version(crd)
    assert version["name"] == labels.VERSION
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns[:3] == ["Model", "Replicas", "Ready"]
    assert "Age" in columns


def test_defaults_enums_bounds_and_rules_reach_the_schema() -> None:
    spec = crdgen.spec_schema()
    props = spec["properties"]
    assert props["replicas"]["default"] == 1
    assert props["replicas"]["minimum"] == 0
    assert props["engine"]["default"] == {}, "nested objects default to {} so their fields default"
    assert props["engine"]["properties"]["image"]["default"].startswith("vllm/vllm-openai:")
    assert props["placement"]["properties"]["strategy"]["enum"] == ["pack", "spread"]
    surge = props["rollout"]["properties"]["maxSurge"]
    assert surge["x-kubernetes-int-or-string"] is True
    assert "type" not in surge
    rules = {r["fieldPath"]: r for r in spec["x-kubernetes-validations"]}
    assert "minReplicas" in rules[".minReplicas"]["rule"]
    assert "tensorParallelSize" in rules[".resources.gpus"]["rule"]
    gpu_util = props["engine"]["properties"]["gpuMemoryUtilization"]
    assert gpu_util["exclusiveMinimum"] is True and gpu_util["minimum"] == 0


def test_status_has_no_defaults_and_map_lists() -> None:
    status = crdgen.status_schema()
    assert "default" not in yaml.safe_dump(status)
    assert status["properties"]["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_inexpressible_union_is_refused() -> None:
    schema = {"type": "object", "properties": {"x": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}}}
    with pytest.raises(NotStructuralError, match=r"\.x"):
        to_structural(schema)


def test_refs_are_inlined_and_field_description_wins() -> None:
    schema = {
        "$defs": {
            "Inner": {"type": "object", "description": "inner", "properties": {"a": {"type": "string"}}}
        },
        "type": "object",
        "properties": {"inner": {"$ref": "#/$defs/Inner", "description": "outer"}},
    }
    out = to_structural(schema)
    assert out["properties"]["inner"] == {
        "type": "object",
        "description": "outer",
        "properties": {"a": {"type": "string"}},
    }
