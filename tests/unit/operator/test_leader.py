"""Leader election over a fake Lease API with optimistic concurrency, as the API server does it."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from flotilla.operator.config import LeaderConfig
from flotilla.operator.leader import LeaderElector, LostLeadershipError


class FakeLeases:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.calls: list[str] = []

    def _view(self) -> Any:
        assert self.lease is not None
        spec = self.lease["spec"]
        return SimpleNamespace(
            metadata=SimpleNamespace(resource_version=str(self.rv)),
            spec=SimpleNamespace(
                holder_identity=spec.get("holderIdentity"),
                renew_time=spec.get("renewTime"),
                lease_duration_seconds=spec.get("leaseDurationSeconds"),
                acquire_time=spec.get("acquireTime"),
                lease_transitions=spec.get("leaseTransitions"),
            ),
        )

    async def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        self.calls.append("read")
        if self.lease is None:
            raise ApiException(status=404)
        return self._view()

    async def create_namespaced_lease(self, namespace: str, body: dict[str, Any]) -> Any:
        self.calls.append("create")
        if self.lease is not None:
            raise ApiException(status=409)
        self.lease, self.rv = copy.deepcopy(body), self.rv + 1
        return self._view()

    async def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any]) -> Any:
        self.calls.append("replace")
        if body["metadata"].get("resourceVersion") != str(self.rv):
            raise ApiException(status=409)
        self.lease, self.rv = copy.deepcopy(body), self.rv + 1
        return self._view()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


CONFIG = LeaderConfig(lease_duration_s=15, renew_period_s=5)


async def test_one_holder_and_one_request_per_renewal() -> None:
    api, clock = FakeLeases(), Clock()
    a = LeaderElector(api, CONFIG.model_copy(update={"identity": "a"}), clock)
    b = LeaderElector(api, CONFIG.model_copy(update={"identity": "b"}), clock)
    assert await a._try() is True
    assert await b._try() is False, "a live lease is not stolen"
    api.calls.clear()
    clock.now += 5
    assert await a._try() is True
    assert api.calls == ["replace"], "renewal writes from the Lease it holds, no read"


async def test_expired_lease_is_taken_over_and_the_old_holder_notices() -> None:
    api, clock = FakeLeases(), Clock()
    a = LeaderElector(api, CONFIG.model_copy(update={"identity": "a"}), clock)
    b = LeaderElector(api, CONFIG.model_copy(update={"identity": "b"}), clock)
    await a._try()
    clock.now += 16
    assert await b._try() is True
    assert api.lease is not None and api.lease["spec"]["leaseTransitions"] == 1
    assert await a._try() is False, "a stale holder's write conflicts and it sees the new holder"


async def test_hold_raises_when_the_lease_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    api, clock = FakeLeases(), Clock()
    a = LeaderElector(api, CONFIG.model_copy(update={"identity": "a", "renew_period_s": 0.01}), clock)
    await a._try()
    assert api.lease is not None
    api.lease["spec"]["holderIdentity"] = "intruder"
    api.rv += 1
    with pytest.raises(LostLeadershipError):
        await a.hold()
