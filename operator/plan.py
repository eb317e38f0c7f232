"""Decide what to create, delete and patch: a pure function of one fleet's snapshot.

The planner is level-triggered: it looks only at the desired spec and the pods and nodes as they
are now, never at what happened before, so running it again (after an event, a timer or an operator
restart) gives the same answer until the world changes. Its rules, in order:

1. Pods being deleted are ignored, except on a node that is gone: nothing will confirm their graceful
   stop, so they are force-deleted. Pods on a node that is gone (or NotReady past a grace period) are
   deleted and their slot refilled at once. Failed pods are replaced after an exponential backoff
   counted on the pod itself (the `flotilla.dev/failures` annotation), so restarts keep the count.
2. Each replica index keeps at most one pod of the current revision and one of an older revision.
3. Surplus current pods go, unready first, then highest index first.
4. Old-revision pods go when that keeps at least `replicas - maxUnavailable` pods ready (unready
   ones always may go); new pods are created while the total stays within `replicas + maxSurge`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flotilla.api.spec import RolloutSpec
from flotilla.operator.config import BackoffConfig
from flotilla.operator.observe import NodeState, ObservedPod


@dataclass(frozen=True)
class Create:
    index: int
    failures: int = 0
    reason: str = "Create"


@dataclass(frozen=True)
class Delete:
    name: str
    index: int
    reason: str
    force: bool = False
    """Delete with grace period 0 (the pod's node is gone, nothing will confirm a graceful stop)."""


@dataclass(frozen=True)
class Patch:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass(frozen=True)
class FleetSnapshot:
    """The inputs of one planning step."""

    replicas: int
    revision: str
    rollout: RolloutSpec
    pods: tuple[ObservedPod, ...]
    now: float
    nodes: Mapping[str, NodeState] | None = None
    """Known nodes; None when unknown (then no pod is judged lost)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Mutable labels every pod should carry."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Mutable annotations every pod should carry."""


@dataclass
class Plan:
    creates: list[Create] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)
    requeue_after: float | None = None

    @property
    def empty(self) -> bool:
        return not (self.creates or self.deletes or self.patches)

    def wake_in(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


def resolve_bound(value: int | str, replicas: int, *, round_up: bool) -> int:
    """An int-or-percent bound as a pod count (percent of replicas, rounded like a Deployment)."""
    if isinstance(value, int):
        return value
    share = int(value.rstrip("%")) * replicas / 100
    return math.ceil(share) if round_up else math.floor(share)


def rollout_bounds(rollout: RolloutSpec, replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as counts; never both zero, or a rollout could not move."""
    surge = resolve_bound(rollout.max_surge, replicas, round_up=True)
    unavailable = resolve_bound(rollout.max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def removal_order(pods: Iterable[ObservedPod]) -> list[ObservedPod]:
    """Which pods to remove first: unready before ready, then the highest index."""
    return sorted(pods, key=lambda p: (p.ready, -p.index, p.name))


def _keep_order(pods: Iterable[ObservedPod]) -> list[ObservedPod]:
    # The pod to keep when an index has duplicates: ready, running, then the oldest.
    return sorted(pods, key=lambda p: (not p.ready, p.terminal, p.created, p.name))


def plan(snap: FleetSnapshot, backoff: BackoffConfig, node_lost_grace_s: float) -> Plan:
    out = Plan()
    freed: dict[int, int] = {}  # index -> failures carried to its replacement
    candidates: list[ObservedPod] = []

    # 1. Lost and failed pods.
    for pod in snap.pods:
        if pod.deleting:
            # A graceful deletion ends when the kubelet confirms the stop; on a gone node none will,
            # and the pod would linger until the pod GC (40 s and more) holding its engine's place
            # in the routers and its GPUs in the books. Its slot was refilled when the deletion began.
            if _node_gone(pod, snap):
                out.deletes.append(Delete(pod.name, pod.index, "NodeGone", force=True))
            continue
        lost = _lost(pod, snap, node_lost_grace_s, out)
        if lost is not None:
            out.deletes.append(Delete(pod.name, pod.index, lost, force=lost == "NodeGone"))
            freed.setdefault(pod.index, pod.failures)
            continue
        if pod.terminal:
            wait = (pod.finished_at or pod.created) + backoff.delay(pod.failures + 1) - snap.now
            if wait <= 0:
                out.deletes.append(Delete(pod.name, pod.index, "PodFailed"))
                freed[pod.index] = pod.failures + 1
                continue
            out.wake_in(wait)  # stays in its slot, unready, until the backoff has passed
        candidates.append(pod)

    # 2. One current and one old pod per index.
    current: dict[int, ObservedPod] = {}
    old: dict[int, ObservedPod] = {}
    by_slot: dict[tuple[int, bool], list[ObservedPod]] = {}
    for pod in candidates:
        by_slot.setdefault((pod.index, pod.revision == snap.revision), []).append(pod)
    for (index, is_current), pods in sorted(by_slot.items()):
        keep, *extra = _keep_order(pods)
        (current if is_current else old)[index] = keep
        out.deletes += [Delete(p.name, p.index, "Duplicate") for p in extra]

    # 3. Surplus current pods.
    n = snap.replicas
    surge, unavailable = rollout_bounds(snap.rollout, n)
    if len(current) > n:
        for pod in removal_order(current.values())[: len(current) - n]:
            out.deletes.append(Delete(pod.name, pod.index, "ScaleDown"))
            del current[pod.index]

    # 4a. Old pods, within the availability bound.
    min_available = max(0, n - unavailable)
    ready = sum(p.ready for p in current.values()) + sum(p.ready for p in old.values())
    replaced = {i for i, p in current.items() if p.ready}
    for pod in sorted(old.values(), key=lambda p: (p.index not in replaced, p.ready, -p.index, p.name)):
        if pod.ready and ready - 1 < min_available:
            continue
        out.deletes.append(Delete(pod.name, pod.index, "RollingUpdate"))
        ready -= pod.ready
        del old[pod.index]

    # 4b. New pods, within the surge bound.
    missing = n - len(current)
    room = n + surge - len(current) - len(old)
    count = max(0, min(missing, room))
    out.creates = [
        Create(index, freed.get(index, 0), "Replace" if index in freed else "Create")
        for index in _free_indices(count, n, current, old, freed)
    ]

    # Metadata that changed without a new revision (tier, placement hints) is patched in place.
    deleted = {d.name for d in out.deletes}
    for pod in [*current.values(), *old.values()]:
        if pod.name in deleted:
            continue
        have_labels = dict(pod.extra_labels)
        have_annotations = dict(pod.annotations)
        want_labels = {k: v for k, v in snap.labels.items() if have_labels.get(k) != v}
        want_annotations = {k: v for k, v in snap.annotations.items() if have_annotations.get(k) != v}
        if want_labels or want_annotations:
            out.patches.append(Patch(pod.name, want_labels, want_annotations))
    return out


def _free_indices(
    count: int,
    replicas: int,
    current: Mapping[int, ObservedPod],
    old: Mapping[int, ObservedPod],
    freed: Mapping[int, int],
) -> list[int]:
    """Indices for new pods: freed slots, holes below `replicas`, next to old pods, then beyond."""
    if count <= 0:
        return []
    used = set(current) | set(old)
    order = [i for i in sorted(freed) if i not in used]
    order += [i for i in range(replicas) if i not in used and i not in freed]
    # A slot an old pod holds gets its new pod beside it (surge), unready old pods first.
    order += [p.index for p in removal_order(old.values()) if p.index not in current]
    i = replicas
    while len(order) < count:
        if i not in used and i not in freed:
            order.append(i)
        i += 1
    return order[:count]


def _node_gone(pod: ObservedPod, snap: FleetSnapshot) -> bool:
    return pod.node is not None and snap.nodes is not None and pod.node not in snap.nodes


def _lost(pod: ObservedPod, snap: FleetSnapshot, grace: float, out: Plan) -> str | None:
    """Why the pod's node makes it lost, or None."""
    if pod.node is None or snap.nodes is None:
        return None
    node = snap.nodes.get(pod.node)
    if node is None:
        return "NodeGone"
    if node.ready or node.not_ready_since is None:
        return None
    remaining = node.not_ready_since + grace - snap.now
    if remaining <= 0:
        return "NodeNotReady"
    out.wake_in(remaining)
    return None
