"""Fixtures for the CRD fuzz tests: the operator's fixtures (the CRD, the operator as a process,
fleet helpers) and the placement loop, re-exported from their conftests rather than copied, so the
fuzzed fleets meet the operator and the scheduler exactly as the other e2e tests run them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _conftest(folder: str) -> ModuleType:
    # The same module names the placement conftest uses, so each conftest is loaded once.
    name = {"operator": "flotilla_e2e_operator_fixtures", "placement": "flotilla_e2e_placement_fixtures"}[
        folder
    ]
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent.parent / folder / "conftest.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_op = _conftest("operator")
crd = _op.crd
operator_factory = _op.operator_factory
operator = _op.operator
fleets = _op.fleets
placement = _conftest("placement").placement
