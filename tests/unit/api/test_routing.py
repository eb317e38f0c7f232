"""The policy catalogue the CRD, the operator and the router share."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flotilla.api import RouterSpec
from flotilla.api.crdgen import spec_schema
from flotilla.api.routing import POLICY_NAMES, POLICY_PARAMS, params_problem
from flotilla.router.policies import default_registry


def test_the_router_registers_exactly_the_api_policies_with_their_models() -> None:
    registry = default_registry()
    assert registry.names() == sorted(POLICY_NAMES) == sorted(POLICY_PARAMS)
    for name in POLICY_NAMES:
        assert registry.params_model(name) is POLICY_PARAMS[name]


def test_the_crd_lists_the_policy_names() -> None:
    policy = spec_schema()["properties"]["router"]["properties"]["policy"]
    assert policy["enum"] == list(POLICY_NAMES)


def test_params_problem_names_each_refused_key() -> None:
    assert params_problem("least_work", None) is None
    assert params_problem("prefix_affinity", {"load_factor": 2}) is None
    problem = params_problem("prefix_affinity", {"load_factor": 0.5, "typo": 1})
    assert problem == "load_factor: Input should be greater than 1; typo: Extra inputs are not permitted"
    assert params_problem("least_reqest", {}) == (
        "unknown policy 'least_reqest'; known: " + ", ".join(POLICY_NAMES)
    )


def test_params_without_a_policy_are_refused() -> None:
    with pytest.raises(ValidationError, match="params need a policy"):
        RouterSpec.model_validate({"params": {"choices": 2}})
    with pytest.raises(ValidationError, match="policy"):
        RouterSpec.model_validate({"policy": "least-request"})
