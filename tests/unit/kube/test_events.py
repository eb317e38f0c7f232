"""Events name their object, their reporter and their time, with unique names and bounded messages."""

from __future__ import annotations

from flotilla.kube.events import MESSAGE_LIMIT, event_body

POD = {"apiVersion": "v1", "kind": "Pod", "name": "chat-0", "namespace": "team"}


def test_an_event_reports_its_object_component_and_time() -> None:
    event = event_body(
        POD, "Scheduled", "bound to gpu-0", event_type="Normal", component="flotilla-placement", now="T"
    )
    assert event["metadata"]["namespace"] == "team"
    assert event["metadata"]["name"].startswith("chat-0.")
    assert event["involvedObject"] == POD
    assert (event["reason"], event["message"], event["type"]) == ("Scheduled", "bound to gpu-0", "Normal")
    assert event["source"] == {"component": "flotilla-placement"}
    assert event["reportingComponent"] == event["reportingInstance"] == "flotilla-placement"
    assert (event["firstTimestamp"], event["lastTimestamp"], event["count"]) == ("T", "T", 1)


def test_names_are_unique_and_messages_bounded() -> None:
    events = [
        event_body(POD, "FailedScheduling", "x" * 5000, event_type="Warning", component="c", now="T")
        for _ in range(50)
    ]
    assert len({e["metadata"]["name"] for e in events}) == 50
    assert all(len(e["message"]) == MESSAGE_LIMIT for e in events)
