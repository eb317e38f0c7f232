"""The committed RBAC manifest matches the rules in code, and grants no more than needed."""

from __future__ import annotations

from pathlib import Path

from flotilla.operator.rbac import CLUSTER_RULES, render_rbac

RBAC_PATH = Path(__file__).resolve().parents[3] / "operator" / "rbac.yaml"


def test_committed_rbac_matches_code() -> None:
    assert RBAC_PATH.read_text() == render_rbac(), "operator/rbac.yaml drifted: regenerate it"


def test_least_privilege() -> None:
    for rule in CLUSTER_RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
    granted = {
        (g, r, v)
        for rule in CLUSTER_RULES
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert ("flotilla.dev", "inferencefleets", "update") not in granted, "the operator never edits specs"
    assert ("", "nodes", "delete") not in granted
    assert ("", "pods", "create") in granted
    assert ("", "secrets", "get") not in granted
