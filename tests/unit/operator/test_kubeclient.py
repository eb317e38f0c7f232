"""The Kubernetes writer: the Events it posts are stamped with its injected clock."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from flotilla.api import labels
from flotilla.operator.kubeclient import KubeWriter


class FakeCore:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def create_namespaced_event(self, namespace: str, body: dict[str, Any], **_: Any) -> Any:
        self.events.append((namespace, body))

        async def read() -> bytes:
            return b"{}"

        return SimpleNamespace(status=201, read=read)


async def test_event_times_come_from_the_clock_and_requests_are_counted() -> None:
    writer = KubeWriter(SimpleNamespace(), clock=lambda: 1_700_000_000.0)
    core = FakeCore()
    writer._core = core
    fleet = {"metadata": {"name": "chat", "namespace": "team", "uid": "u1", "resourceVersion": "7"}}
    await writer.post_event(fleet, "Normal", "SuccessfulCreate", "Created pods chat-0")
    [(namespace, event)] = core.events
    assert namespace == "team"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2023-11-14T22:13:20Z"
    assert event["involvedObject"] == {
        "apiVersion": labels.API_VERSION,
        "kind": labels.KIND,
        "name": "chat",
        "namespace": "team",
        "uid": "u1",
        "resourceVersion": "7",
    }
    assert (event["reason"], event["type"]) == ("SuccessfulCreate", "Normal")
    assert writer.requests["create_event"] == 1
