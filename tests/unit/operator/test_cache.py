"""The cache: stale watch events never overwrite newer write-through state."""

from __future__ import annotations

from typing import Any

from flotilla.operator.cache import ClusterCache


def pod(rv: str, phase: str = "Pending", node: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "f-0-a",
            "namespace": "ns",
            "resourceVersion": rv,
            "labels": {"flotilla.dev/fleet": "f"},
        },
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase},
    }


def test_older_event_does_not_overwrite_newer_state() -> None:
    cache = ClusterCache()
    assert cache.apply_pod("ADDED", pod("10", "Running")) == ("ns", "f")
    cache.apply_pod("MODIFIED", pod("9", "Pending"))
    (only,) = cache.pods_of(("ns", "f"))
    assert only["status"]["phase"] == "Running"
    cache.apply_pod("DELETED", pod("11"))
    assert cache.pods_of(("ns", "f")) == []


def test_unlabelled_pods_are_ignored_and_nodes_index_fleets() -> None:
    cache = ClusterCache()
    assert cache.apply_pod("ADDED", {"metadata": {"name": "x", "namespace": "ns"}}) is None
    cache.apply_pod("ADDED", pod("1", node="n1"))
    assert cache.fleets_with_pods_on("n1") == {("ns", "f")}
    ready = {"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert cache.apply_node("ADDED", ready) is True
    assert cache.apply_node("MODIFIED", ready) is False, "a heartbeat is not worth a reconcile"
    assert cache.apply_node("DELETED", ready) is True
    assert "n1" not in cache.nodes()


def test_marking_deletion_is_visible_to_the_next_reconcile() -> None:
    cache = ClusterCache()
    cache.apply_pod("ADDED", pod("1"))
    cache.mark_pod_deleting(("ns", "f"), "f-0-a", "2026-01-01T00:00:00Z")
    assert cache.pods_of(("ns", "f"))[0]["metadata"]["deletionTimestamp"] == "2026-01-01T00:00:00Z"


def node(name: str, rv: str) -> dict[str, Any]:
    status = {"conditions": [{"type": "Ready", "status": "True"}]}
    return {"metadata": {"name": name, "resourceVersion": rv}, "status": status}


def test_a_list_older_than_a_nodes_deletion_does_not_bring_it_back() -> None:
    # The start-up LIST (prime) races Kopf's stream: a LIST answered before the deletion, applied
    # after its DELETED event, would keep the node Ready here and its pods would never be replaced.
    cache = ClusterCache()
    cache.apply_node(None, node("n1", "5"))
    cache.apply_node("DELETED", node("n1", "12"))
    assert cache.apply_node(None, node("n1", "5")) is False
    assert "n1" not in cache.nodes()
    # A node created again under the same name (a newer version) is a node again.
    assert cache.apply_node("ADDED", node("n1", "20")) is True
    assert "n1" in cache.nodes()
    # And an older event never overwrites a newer one.
    cache.apply_node(
        "MODIFIED", {**node("n1", "15"), "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    )
    assert cache.nodes()["n1"].ready


def test_relist_drops_nodes_whose_deletion_no_watch_event_reported() -> None:
    # Kopf re-lists after a broken watch (410 Gone) and replays only what exists: a node deleted
    # meanwhile never gets its DELETED event. The periodic LIST makes the cache match.
    cache = ClusterCache()
    for name, rv in (("kept", "3"), ("vanished", "4"), ("late", "30")):
        cache.apply_node("ADDED", node(name, rv))
    dropped = cache.replace_nodes([node("kept", "3")], list_version=25)
    assert dropped == ["vanished"]
    # "late" came by the watch after the list was taken: the list could not know it.
    assert set(cache.nodes()) == {"kept", "late"}
