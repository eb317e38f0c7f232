"""The operator's in-memory view of fleets, their pods, nodes and PriorityClasses.

Fed by watch events (through Kopf) and by the responses of the operator's own writes (write-through),
so a reconcile reads only memory: at steady state the operator makes no API request but one node LIST
per resync period (see replace_nodes), and a pod it has just created is seen by the next reconcile
even before the watch delivers it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from flotilla.api import labels
from flotilla.operator.observe import NodeState, observe_node

FleetKey = tuple[str, str]  # (namespace, name)
MAX_TOMBSTONES = 4096
Obj = dict[str, Any]


def _rv(obj: Obj) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion", ""))
    except ValueError:
        return None


def _newer_or_same(new: Obj, old: Obj | None) -> bool:
    # resourceVersions are opaque by contract but etcd revisions in practice; when both parse, an
    # older event (a watch lagging behind our own write) must not overwrite what we already know.
    if old is None:
        return True
    a, b = _rv(new), _rv(old)
    return a is None or b is None or a >= b


class ClusterCache:
    def __init__(self) -> None:
        self.fleets: dict[FleetKey, Obj] = {}
        self._pods: dict[FleetKey, dict[str, Obj]] = {}
        self._nodes: dict[str, NodeState] = {}
        self._node_versions: dict[str, int | None] = {}
        self._nodes_gone: dict[str, int] = {}
        """resourceVersion of each deleted node's DELETED event (the newest MAX_TOMBSTONES kept)."""
        self._priority_classes: dict[str, int] = {}

    # --- fleets ---------------------------------------------------------------------------------
    def apply_fleet(self, event_type: str | None, obj: Obj) -> FleetKey:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.fleets.pop(key, None)
        elif _newer_or_same(obj, self.fleets.get(key)):
            self.fleets[key] = copy.deepcopy(obj)
        return key

    def fleet_keys(self) -> list[FleetKey]:
        return list(self.fleets)

    # --- pods -----------------------------------------------------------------------------------
    def apply_pod(self, event_type: str | None, obj: Obj) -> FleetKey | None:
        meta = obj.get("metadata") or {}
        fleet = (meta.get("labels") or {}).get(labels.LABEL_FLEET)
        if not fleet:
            return None
        key = (meta.get("namespace", ""), fleet)
        pods = self._pods.setdefault(key, {})
        name = meta.get("name", "")
        if event_type == "DELETED":
            pods.pop(name, None)
        elif _newer_or_same(obj, pods.get(name)):
            pods[name] = copy.deepcopy(obj)
        return key

    def mark_pod_deleting(self, key: FleetKey, name: str, when: str) -> None:
        pod = self._pods.get(key, {}).get(name)
        if pod is not None:
            pod.setdefault("metadata", {}).setdefault("deletionTimestamp", when)

    def forget_pod(self, key: FleetKey, name: str) -> None:
        self._pods.get(key, {}).pop(name, None)

    def pods_of(self, key: FleetKey) -> list[Obj]:
        return list(self._pods.get(key, {}).values())

    def fleets_with_pods_on(self, node: str) -> set[FleetKey]:
        return {
            key
            for key, pods in self._pods.items()
            if any((p.get("spec") or {}).get("nodeName") == node for p in pods.values())
        }

    # --- nodes ----------------------------------------------------------------------------------
    def apply_node(self, event_type: str | None, obj: Obj) -> bool:
        """Record a node; True when its readiness or existence changed (worth a reconcile).

        A node is force-evacuated when it is missing here, and never while it is present, so a
        stale copy must not bring a deleted node back: a LIST answered before the deletion (the
        start-up prime racing Kopf's stream, a re-list) is older than the DELETED event."""
        state = observe_node(obj)
        rv = _rv(obj)
        before = self._nodes.get(state.name)
        if event_type == "DELETED":
            self._nodes.pop(state.name, None)
            self._node_versions.pop(state.name, None)
            if rv is not None:
                self._nodes_gone.pop(state.name, None)
                self._nodes_gone[state.name] = rv
                while len(self._nodes_gone) > MAX_TOMBSTONES:
                    del self._nodes_gone[next(iter(self._nodes_gone))]
            return True
        gone = self._nodes_gone.get(state.name)
        if gone is not None and rv is not None and rv <= gone:
            return False
        known = self._node_versions.get(state.name)
        if before is not None and known is not None and rv is not None and rv < known:
            return False
        self._nodes_gone.pop(state.name, None)
        self._nodes[state.name] = state
        self._node_versions[state.name] = rv
        return before is None or before.ready != state.ready

    def replace_nodes(self, items: Iterable[Obj], list_version: int | None) -> list[str]:
        """Make the node view match a fresh LIST (taken at `list_version`); returns the nodes dropped.

        Kopf re-lists after a broken watch (410 Gone) but replays only the objects that exist: a node
        deleted meanwhile gets no DELETED event and would stay here, Ready, forever, its pods never
        replaced. A node absent from the list goes unless the watch brought it after the list."""
        listed = set()
        for obj in items:
            listed.add(observe_node(obj).name)
            self.apply_node(None, obj)
        dropped = []
        for name in list(self._nodes):
            if name in listed:
                continue
            known = self._node_versions.get(name)
            if list_version is not None and known is not None and known > list_version:
                continue  # added after the list was taken
            self._nodes.pop(name)
            self._node_versions.pop(name, None)
            dropped.append(name)
        return dropped

    def nodes(self) -> dict[str, NodeState]:
        return dict(self._nodes)

    # --- priority classes -----------------------------------------------------------------------
    def apply_priority_class(self, event_type: str | None, obj: Obj) -> str:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if event_type == "DELETED":
            self._priority_classes.pop(name, None)
        else:
            self._priority_classes[name] = int(obj.get("value", 0))
        return name

    def priority_value(self, name: str) -> int | None:
        return self._priority_classes.get(name)

    def fleets_using_class(self, name: str) -> Iterable[FleetKey]:
        for key, fleet in self.fleets.items():
            if ((fleet.get("spec") or {}).get("priority") or {}).get("className") == name:
                yield key
