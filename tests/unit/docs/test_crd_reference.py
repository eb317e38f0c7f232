"""docs/crd-reference.md is what `python -m flotilla.crdref` generates from the models today,
and it names every field of the spec and status models."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from flotilla import crdref
from flotilla.api import InferenceFleetSpec, InferenceFleetStatus
from flotilla.localcluster.binaries import find_repo_root

REFERENCE = find_repo_root(Path(__file__).resolve()) / crdref.DEFAULT_PATH


def test_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == crdref.render(), "docs/crd-reference.md is stale: run `make crds`"
    assert crdref.main(["--check", f"--path={REFERENCE}"]) == 0


def top_level_fields(model: type[BaseModel], prefix: str) -> set[str]:
    return {f"`{prefix}.{field.alias or name}`" for name, field in model.model_fields.items()}


def test_reference_lists_every_field() -> None:
    text = REFERENCE.read_text()
    expected = top_level_fields(InferenceFleetSpec, "spec") | top_level_fields(InferenceFleetStatus, "status")
    assert {f for f in expected if f not in text} == set()
    assert "`spec.engine.gpuMemoryUtilization`" in text and "> 0" in text
    assert "minReplicas must not exceed replicas" in text  # CEL rules are listed


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "ref.md"
    stale.write_text("old\n")
    assert crdref.main(["--check", f"--path={stale}"]) == 1
    assert crdref.main(["--write", f"--path={stale}"]) == 0
    assert crdref.main(["--check", f"--path={stale}"]) == 0
