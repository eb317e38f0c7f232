"""One reconcile of one fleet: snapshot from the cache, plan, act, write status.

The only place where the pure parts (render, plan, status) meet I/O (the Writer). Each action's
outcome is written through to the cache, so the next reconcile sees it even before the watch does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from flotilla.api import InferenceFleetSpec, InferenceFleetStatus
from flotilla.operator.cache import ClusterCache, FleetKey
from flotilla.operator.config import OperatorConfig
from flotilla.operator.kubeclient import NotFoundError, Writer
from flotilla.operator.observe import NodeState, observe_pod, rfc3339
from flotilla.operator.plan import Create, Delete, FleetSnapshot, Patch, Plan, plan, rollout_bounds
from flotilla.operator.render import FleetRef, mutable_metadata, render_pod, revision_of
from flotilla.operator.status import compute_status, routing_problem

log = logging.getLogger("flotilla.operator")
ERROR_RETRY_S = 5.0


@dataclass
class Outcome:
    requeue_after: float | None
    plan: Plan | None = None
    failed: int = 0
    """API writes of the plan that failed (retried by the next reconcile)."""


class FleetController:
    def __init__(
        self, cache: ClusterCache, writer: Writer, config: OperatorConfig, clock: Callable[[], float]
    ) -> None:
        self._cache = cache
        self._writer = writer
        self._config = config
        self._clock = clock

    async def reconcile(self, key: FleetKey) -> Outcome:
        fleet = self._cache.fleets.get(key)
        if fleet is None or (fleet.get("metadata") or {}).get("deletionTimestamp"):
            # Owner references let the garbage collector remove the pods; nothing to do here.
            return Outcome(None)
        meta = fleet["metadata"]
        namespace, name = key
        previous = _previous_status(fleet)
        try:
            spec = InferenceFleetSpec.model_validate(fleet.get("spec") or {})
        except ValidationError as exc:
            # The CRD refuses such specs; this guards against a CRD older than the operator.
            log.warning("fleet %s/%s: invalid spec: %s", namespace, name, exc)
            return Outcome(None)

        blocked = None
        tier = spec.priority.tier or 0
        if spec.priority.class_name:
            value = self._cache.priority_value(spec.priority.class_name)
            if value is None:
                blocked = f"PriorityClass {spec.priority.class_name} not found"
            else:
                tier = value
        revision = revision_of(spec, self._config.render)
        want_labels, want_annotations = mutable_metadata(name, spec, tier)
        pods = tuple(p for p in (observe_pod(raw) for raw in self._cache.pods_of(key)) if p is not None)
        now = self._clock()
        nodes = self._cache.nodes()
        for pod in pods:
            # The node cache may be behind (e.g. a node just added): confirm a node is gone before
            # its pods are force-deleted (those being deleted too); an existing one counts as Ready
            # until it is watched.
            unknown = pod.node and pod.node not in nodes
            if unknown and pod.node and await self._writer.node_exists(pod.node):
                nodes[pod.node] = NodeState(pod.node, ready=True)
        snapshot = FleetSnapshot(
            replicas=spec.replicas,
            revision=revision,
            rollout=spec.rollout,
            pods=pods,
            now=now,
            nodes=nodes,
            labels=want_labels,
            annotations=want_annotations,
        )
        actions = plan(snapshot, self._config.backoff, self._config.node_lost_grace_s)
        if blocked:
            actions.creates = []
            actions.wake_in(ERROR_RETRY_S)

        failed, create_error = await self._act(key, fleet, spec, revision, tier, actions)
        if failed:
            actions.wake_in(ERROR_RETRY_S)

        # Status describes the pods as they are after this reconcile's actions (written through).
        pods = tuple(p for p in (observe_pod(raw) for raw in self._cache.pods_of(key)) if p is not None)
        _, unavailable = rollout_bounds(spec.rollout, spec.replicas)
        routing = routing_problem(spec.router)
        status = compute_status(
            fleet_name=name,
            generation=meta.get("generation"),
            replicas=spec.replicas,
            revision=revision,
            min_available=max(0, spec.replicas - unavailable),
            pods=pods,
            plan=actions,
            previous=previous,
            now=now,
            blocked=blocked,
            create_error=create_error,
            routing_problem=routing,
        )
        if routing and _condition_message(previous, "RoutingAccepted") != routing:
            # Once per new refusal, not per reconcile: `kubectl describe fleet` shows it beside the condition.
            await self._event(fleet, "Warning", "InvalidRouterParams", routing)
        wire = status.to_wire()
        if previous is None or previous.to_wire() != wire:
            try:
                updated = await self._writer.patch_fleet_status(namespace, name, wire)
                self._cache.apply_fleet("MODIFIED", updated)
            except NotFoundError:
                return Outcome(None, actions, failed)
        return Outcome(actions.requeue_after, actions, failed)

    async def _act(  # noqa: PLR0917
        self,
        key: FleetKey,
        fleet: dict[str, Any],
        spec: InferenceFleetSpec,
        revision: str,
        tier: int,
        actions: Plan,
    ) -> tuple[int, str | None]:
        """Carry out the plan, each kind of action concurrently; returns how many failed (the next
        reconcile retries them) and why the first create failed, if one did (the API server may
        refuse every pod of a spec the CRD accepted: the fleet's status must say so). One Event per
        kind of action sums up what was done."""
        namespace, name = key
        ref = FleetRef(namespace, name, fleet["metadata"]["uid"])

        async def delete(d: Delete) -> str:
            await self._delete(key, d)
            return f"{d.name} ({d.reason})"

        async def create(c: Create) -> str:
            body = render_pod(
                ref,
                spec,
                index=c.index,
                revision=revision,
                tier=tier,
                failures=c.failures,
                config=self._config.render,
            )
            pod = await self._writer.create_pod(namespace, body)
            self._cache.apply_pod("ADDED", pod)
            return f"{pod.get('metadata', {}).get('name', '?')} (replica {c.index}, {c.reason})"

        async def patch(p: Patch) -> str:
            try:
                pod = await self._writer.patch_pod_metadata(namespace, p.name, p.labels, p.annotations)
            except NotFoundError:
                self._cache.forget_pod(key, p.name)
                return p.name
            self._cache.apply_pod("MODIFIED", pod)
            return p.name

        failed = 0
        deleted = await asyncio.gather(*(delete(d) for d in actions.deletes), return_exceptions=True)
        created = await asyncio.gather(*(create(c) for c in actions.creates), return_exceptions=True)
        patched = await asyncio.gather(*(patch(p) for p in actions.patches), return_exceptions=True)
        for verb, results in (("delete", deleted), ("create", created), ("patch", patched)):
            errors = [r for r in results if isinstance(r, BaseException)]
            failed += len(errors)
            if errors:
                log.warning("fleet %s/%s: %d %s(s) failed: %s", namespace, name, len(errors), verb, errors[0])
                await self._event(
                    fleet, "Warning", f"Failed{verb.title()}", f"{len(errors)} failed: {errors[0]}"
                )
        done_deletes = [r for r in deleted if isinstance(r, str)]
        done_creates = [r for r in created if isinstance(r, str)]
        if done_deletes:
            await self._event(fleet, "Normal", "SuccessfulDelete", "Deleted pods " + ", ".join(done_deletes))
        if done_creates:
            await self._event(
                fleet,
                "Normal",
                "SuccessfulCreate",
                f"Created pods (revision {revision}) " + ", ".join(done_creates),
            )
        create_errors = [r for r in created if isinstance(r, BaseException)]
        return failed, (_api_message(create_errors[0]) if create_errors else None)

    async def _delete(self, key: FleetKey, delete: Delete) -> None:
        namespace, _ = key
        existed = await self._writer.delete_pod(namespace, delete.name, force=delete.force)
        if existed and not delete.force:
            # Stands until the watch brings the API server's stamp; the injected clock, as everywhere here.
            self._cache.mark_pod_deleting(key, delete.name, rfc3339(self._clock()))
        else:
            self._cache.forget_pod(key, delete.name)

    async def _event(self, fleet: dict[str, Any], kind: str, reason: str, message: str) -> None:
        try:
            await self._writer.post_event(fleet, kind, reason, message)
        except Exception as exc:  # events are best effort
            log.debug("event %s not posted: %s", reason, exc)


def _api_message(exc: BaseException) -> str:
    """The API server's own words from a refused request (the `message` of its Status body)."""
    body = getattr(exc, "body", None)
    try:
        return str(json.loads(body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc) or type(exc).__name__


def _condition_message(status: InferenceFleetStatus | None, kind: str) -> str | None:
    """The message of a False condition of this kind (None when it is absent or not False)."""
    for cond in status.conditions if status else []:
        if cond.type == kind and cond.status == "False":
            return cond.message
    return None


def _previous_status(fleet: dict[str, Any]) -> InferenceFleetStatus | None:
    raw = fleet.get("status")
    if not raw:
        return None
    try:
        return InferenceFleetStatus.model_validate(raw)
    except ValidationError:
        return None
