"""Compute a fleet's status and conditions from what was observed and what was just planned.

Pure, like the planner: a condition's lastTransitionTime is carried over from the previous status
while its status value stays the same, so recomputing an unchanged fleet yields an identical status
and the operator writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from flotilla.api import RouterSpec, labels
from flotilla.api.routing import params_problem
from flotilla.api.status import Condition, ConditionType, InferenceFleetStatus, InstanceStatus
from flotilla.operator.observe import ObservedPod, rfc3339
from flotilla.operator.plan import Plan
from flotilla.operator.render import selector_string


def _instances(pods: Sequence[ObservedPod]) -> list[InstanceStatus]:
    # One entry per index (a list-map key): prefer the pod that is ready, then the newest.
    best: dict[int, ObservedPod] = {}
    for pod in sorted(pods, key=lambda p: (p.ready, p.created)):
        best[pod.index] = pod
    return [
        InstanceStatus(
            index=p.index,
            pod=p.name,
            revision=p.revision,
            phase=p.phase,
            ready=p.ready,
            node=p.node,
            address=f"{p.ip}:{labels.ENGINE_PORT}" if p.ip else None,
        )
        for _, p in sorted(best.items())
    ]


def routing_problem(router: RouterSpec) -> str | None:
    """Why the router would refuse this fleet's policy configuration, naming the field (the CRD
    refuses unknown names and params without a policy; the params' own rules are checked here,
    against the same models the router builds policies from)."""
    if router.policy is None:
        return None
    problem = params_problem(router.policy, router.params)
    if problem is None:
        return None
    return (
        f"spec.router.params: {problem} (policy {router.policy}); the router balances this fleet"
        " with its default policy until this is fixed"
    )


def compute_status(
    *,
    fleet_name: str,
    generation: int | None,
    replicas: int,
    revision: str,
    min_available: int,
    pods: Sequence[ObservedPod],
    plan: Plan,
    previous: InferenceFleetStatus | None,
    now: float,
    blocked: str | None = None,
    create_error: str | None = None,
    routing_problem: str | None = None,
) -> InferenceFleetStatus:
    """The status to write; `blocked` explains why the operator cannot act (e.g. unknown PriorityClass),
    `create_error` why the API server refused the fleet's pods (a spec the CRD accepts but a pod
    cannot carry, such as a node selector value that is no label value), `routing_problem` why
    spec.router cannot configure the router (see `routing_problem`)."""
    live = [p for p in pods if not p.deleting]
    ready = [p for p in live if p.ready]
    current = [p for p in live if p.revision == revision]
    current_ready = [p for p in current if p.ready]
    old = [p for p in live if p.revision != revision]
    failing = [p for p in live if p.terminal or p.failing_reason]
    lost = [d for d in plan.deletes if d.reason in {"NodeGone", "NodeNotReady"}]
    unschedulable = [p for p in live if p.unschedulable]

    conds: dict[ConditionType, tuple[bool, str, str]] = {}
    if len(current_ready) >= replicas:
        conds["Ready"] = (
            True,
            "AllReplicasReady" if replicas else "ScaledToZero",
            f"{replicas} replicas ready",
        )
    else:
        conds["Ready"] = (
            False,
            "ReplicasNotReady",
            f"{len(current_ready)}/{replicas} replicas of revision {revision} ready",
        )

    if blocked:
        conds["Progressing"] = (False, "Blocked", blocked)
    elif old:
        conds["Progressing"] = (True, "RollingUpdate", f"{len(old)} pods of an older revision remain")
    elif len(current) < replicas or plan.creates:
        conds["Progressing"] = (True, "ScalingUp", f"{len(current)}/{replicas} pods exist")
    elif len(current) > replicas:
        conds["Progressing"] = (True, "ScalingDown", f"{len(current)}/{replicas} pods exist")
    elif len(current_ready) < replicas:
        conds["Progressing"] = (True, "WaitingForReady", f"{len(current_ready)}/{replicas} pods ready")
    else:
        conds["Progressing"] = (False, "Complete", f"revision {revision} is fully rolled out")

    if blocked:
        conds["Degraded"] = (True, "Blocked", blocked)
    elif create_error:
        conds["Degraded"] = (True, "CreateFailed", f"pods cannot be created: {create_error}")
    elif lost:
        names = ", ".join(sorted(d.name for d in lost))
        conds["Degraded"] = (True, "NodeLost", f"replacing pods whose node is lost: {names}")
    elif failing:
        detail = ", ".join(sorted(f"{p.name} ({p.failing_reason or p.phase})" for p in failing))
        conds["Degraded"] = (True, "PodsFailing", detail)
    elif len(ready) < min_available:
        conds["Degraded"] = (True, "BelowMinAvailable", f"{len(ready)} ready, want at least {min_available}")
    else:
        conds["Degraded"] = (False, "AsExpected", "")

    if unschedulable:
        first = sorted(unschedulable, key=lambda p: p.name)[0]
        conds["Unschedulable"] = (
            True,
            "PodsUnschedulable",
            f"{len(unschedulable)} pods wait for a node; {first.name}: {first.unschedulable}",
        )
    else:
        conds["Unschedulable"] = (False, "AllScheduled", "")

    if routing_problem:
        conds["RoutingAccepted"] = (False, "InvalidRouterParams", routing_problem)
    else:
        conds["RoutingAccepted"] = (True, "Accepted", "")

    prev = {c.type: c for c in (previous.conditions if previous else [])}
    conditions = []
    for kind, (ok, reason, message) in conds.items():
        value = "True" if ok else "False"
        before = prev.get(kind)
        since = before.last_transition_time if before and before.status == value else rfc3339(now)
        conditions.append(
            Condition(
                type=kind,
                status=value,
                reason=reason,
                message=message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return InferenceFleetStatus(
        observed_generation=generation,
        replicas=len(live),
        ready_replicas=len(ready),
        updated_replicas=len(current),
        selector=selector_string(fleet_name),
        current_revision=revision,
        conditions=conditions,
        instances=_instances(live),
    )
