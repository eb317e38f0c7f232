"""Read pods and nodes (raw API dicts) into the small facts the planner decides on.

Kept apart from planning so the planner's tests build snapshots directly, and apart from I/O so the
same parsing serves watch events, API responses and test fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flotilla.api import labels
from flotilla.operator.render import ANNOTATION_FAILURES

# Container waiting reasons that mean the pod will not become ready by itself soon.
FAILING_REASONS = frozenset(
    {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"}
)


@dataclass(frozen=True)
class ObservedPod:
    """What the planner needs to know about one fleet pod."""

    name: str
    index: int
    revision: str
    phase: str = "Pending"
    ready: bool = False
    node: str | None = None
    ip: str | None = None
    deleting: bool = False
    created: float = 0.0
    failures: int = 0
    finished_at: float | None = None
    """When a Failed/Succeeded pod stopped (its last container's finish, else its creation)."""
    unschedulable: str | None = None
    """The scheduler's message while the pod cannot be placed."""
    failing_reason: str | None = None
    """A container waiting reason from FAILING_REASONS."""
    tier: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    extra_labels: tuple[tuple[str, str], ...] = ()

    @property
    def terminal(self) -> bool:
        return self.phase in {"Failed", "Succeeded"}


@dataclass(frozen=True)
class NodeState:
    name: str
    ready: bool
    not_ready_since: float | None = None


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def rfc3339(ts: float) -> str:
    """The API server's timestamp format (whole seconds, UTC) for a Unix time; parse_time reads it."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def observe_pod(pod: dict[str, Any]) -> ObservedPod | None:
    """The pod's facts, or None when it lacks the labels of a fleet pod."""
    meta = pod.get("metadata") or {}
    pod_labels = meta.get("labels") or {}
    try:
        index = int(pod_labels[labels.LABEL_REPLICA])
    except (KeyError, ValueError):
        return None
    status = pod.get("status") or {}
    ready_cond = _condition(pod, "Ready")
    scheduled = _condition(pod, "PodScheduled")
    unschedulable = None
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        unschedulable = scheduled.get("message") or "Unschedulable"
    failing = None
    finished: float | None = None
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_REASONS:
            failing = waiting["reason"]
        terminated = (cs.get("state") or {}).get("terminated") or {}
        ended = parse_time(terminated.get("finishedAt"))
        if ended is not None:
            finished = ended if finished is None else max(finished, ended)
    annotations = meta.get("annotations") or {}
    try:
        failures = int(annotations.get(ANNOTATION_FAILURES, "0"))
    except ValueError:
        failures = 0
    created = parse_time(meta.get("creationTimestamp")) or 0.0
    phase = status.get("phase") or "Pending"
    if phase in {"Failed", "Succeeded"} and finished is None:
        finished = created
    return ObservedPod(
        name=meta.get("name", ""),
        index=index,
        revision=pod_labels.get(labels.LABEL_REVISION, ""),
        phase=phase,
        ready=bool(ready_cond and ready_cond.get("status") == "True"),
        node=(pod.get("spec") or {}).get("nodeName") or None,
        ip=status.get("podIP") or None,
        deleting=bool(meta.get("deletionTimestamp")),
        created=created,
        failures=failures,
        finished_at=finished if phase in {"Failed", "Succeeded"} else None,
        unschedulable=unschedulable,
        failing_reason=failing,
        tier=pod_labels.get(labels.LABEL_TIER),
        annotations=tuple(sorted(annotations.items())),
        extra_labels=tuple(sorted(pod_labels.items())),
    )


def observe_node(node: dict[str, Any]) -> NodeState:
    ready = _condition(node, "Ready")
    is_ready = bool(ready and ready.get("status") == "True")
    since = None if is_ready or not ready else parse_time(ready.get("lastTransitionTime"))
    return NodeState(name=(node.get("metadata") or {}).get("name", ""), ready=is_ready, not_ready_since=since)
