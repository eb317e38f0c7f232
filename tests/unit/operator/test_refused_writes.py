"""Writes the API server refuses are failures, a fleet whose pods are refused says why, and the
model name never makes pods invalid.

Found by the CRD fuzz (e2e/fuzz): the writer read raw responses without looking at their status,
so a 422 for an invalid pod passed for a created pod, and the fleet sat at "0/1 pods exist".
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes_asyncio.client.exceptions import ApiException

from flotilla.operator.kubeclient import KubeWriter
from flotilla.operator.render import _label_value

REFUSAL = {"kind": "Status", "status": "Failure", "message": 'Pod "f-0" is invalid: spec.nodeSelector: bad'}


def _response(status: int, body: dict[str, Any]) -> Any:
    async def read() -> bytes:
        return json.dumps(body).encode()

    return SimpleNamespace(status=status, reason="Refused", read=read)


class RefusingCore:
    def __init__(self, status: int) -> None:
        self.status = status

    async def create_namespaced_pod(self, namespace: str, body: Any, **_: Any) -> Any:
        return _response(self.status, REFUSAL)

    async def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> Any:
        return _response(self.status, REFUSAL)


async def test_a_refused_create_raises_with_the_servers_message() -> None:
    writer = KubeWriter(SimpleNamespace())
    writer._core = RefusingCore(422)
    with pytest.raises(ApiException) as refused:
        await writer.create_pod("ns", {"metadata": {"generateName": "f-0-"}})
    assert refused.value.status == 422
    assert json.loads(refused.value.body)["message"] == REFUSAL["message"]
    assert writer.requests["create_pod_failed"] == 1


async def test_a_missing_object_is_not_found() -> None:
    writer = KubeWriter(SimpleNamespace())
    writer._core = RefusingCore(404)
    assert await writer.delete_pod("ns", "gone", force=False) is False


def _controller_fixtures() -> Any:
    # test_controller.py's fake API and set-up, loaded from its file (test folders are no packages).
    name = "flotilla_unit_operator_test_controller"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "test_controller.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


async def test_a_fleet_whose_pods_are_refused_says_why() -> None:
    ctl, _, api = _controller_fixtures().setup(replicas=1)

    async def refuse(namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        error = ApiException(status=422, reason="Unprocessable Entity")
        error.body = json.dumps(REFUSAL)
        raise error

    api.create_pod = refuse
    out = await ctl.reconcile(("ns", "f"))
    assert out.failed == 1
    degraded = next(c for c in api.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "CreateFailed"
    assert degraded["message"] == f"pods cannot be created: {REFUSAL['message']}"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_model_label_values_are_always_valid_label_values(name: str) -> None:
    # The fuzz found model names with non-ASCII letters making every pod of the fleet invalid.
    value = _label_value(name)
    assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value) and len(value) <= 63
