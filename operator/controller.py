"""One reconcile of one fleet: snapshot from the cache, plan, act, write status.

The only place where the pure parts (render, plan, status) meet I/O (the Writer). Each action's
outcome is written through to the cache, so the next reconcile sees it even before the watch does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from flotilla.api import InferenceFleetSpec, InferenceFleetStatus
from flotilla.operator.cache import ClusterCache, FleetKey
from flotilla.operator.config import OperatorConfig
from flotilla.operator.kubeclient import NotFoundError, Writer
from flotilla.operator.observe import observe_pod
from flotilla.operator.plan import Delete, FleetSnapshot, Plan, plan, rollout_bounds
from flotilla.operator.render import FleetRef, mutable_metadata, render_pod, revision_of
from flotilla.operator.status import compute_status

log = logging.getLogger("flotilla.operator")
ERROR_RETRY_S = 5.0


@dataclass
class Outcome:
    requeue_after: float | None
    plan: Plan | None = None


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
        raw_pods = self._cache.pods_of(key)
        pods = tuple(p for p in (observe_pod(raw) for raw in raw_pods) if p is not None)
        now = self._clock()
        snapshot = FleetSnapshot(
            replicas=spec.replicas,
            revision=revision,
            rollout=spec.rollout,
            pods=pods,
            now=now,
            nodes=self._cache.nodes(),
            labels=want_labels,
            annotations=want_annotations,
        )
        actions = plan(snapshot, self._config.backoff, self._config.node_lost_grace_s)
        if blocked:
            actions.creates = []
            actions.wake_in(ERROR_RETRY_S)

        failed = await self._act(key, fleet, spec, revision, tier, actions)
        if failed:
            actions.wake_in(ERROR_RETRY_S)

        _, unavailable = rollout_bounds(spec.rollout, spec.replicas)
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
        )
        wire = status.to_wire()
        if previous is None or previous.to_wire() != wire:
            try:
                updated = await self._writer.patch_fleet_status(namespace, name, wire)
                self._cache.apply_fleet("MODIFIED", updated)
            except NotFoundError:
                return Outcome(None, actions)
        return Outcome(actions.requeue_after, actions)

    async def _act(  # noqa: PLR0917
        self,
        key: FleetKey,
        fleet: dict[str, Any],
        spec: InferenceFleetSpec,
        revision: str,
        tier: int,
        actions: Plan,
    ) -> int:
        """Carry out the plan; returns how many actions failed (retried on the next reconcile)."""
        namespace, name = key
        failed = 0
        ref = FleetRef(namespace, name, fleet["metadata"]["uid"])
        for delete in actions.deletes:
            try:
                await self._delete(key, delete)
            except Exception as exc:  # the next reconcile retries; one failure must not stop the rest
                failed += 1
                log.warning("fleet %s/%s: delete %s failed: %s", namespace, name, delete.name, exc)
                continue
            await self._event(
                fleet, "Normal", "SuccessfulDelete", f"Deleted pod {delete.name}: {delete.reason}"
            )
        for create in actions.creates:
            body = render_pod(
                ref,
                spec,
                index=create.index,
                revision=revision,
                tier=tier,
                failures=create.failures,
                config=self._config.render,
            )
            try:
                pod = await self._writer.create_pod(namespace, body)
            except Exception as exc:
                failed += 1
                log.warning("fleet %s/%s: create replica %d failed: %s", namespace, name, create.index, exc)
                await self._event(fleet, "Warning", "FailedCreate", f"replica {create.index}: {exc}")
                continue
            self._cache.apply_pod("ADDED", pod)
            pod_name = pod.get("metadata", {}).get("name", "?")
            await self._event(
                fleet,
                "Normal",
                "SuccessfulCreate",
                f"Created pod {pod_name} for replica {create.index} (revision {revision}): {create.reason}",
            )
        for patch in actions.patches:
            try:
                pod = await self._writer.patch_pod_metadata(
                    namespace, patch.name, patch.labels, patch.annotations
                )
            except NotFoundError:
                self._cache.forget_pod(key, patch.name)
                continue
            except Exception as exc:
                failed += 1
                log.warning("fleet %s/%s: patch %s failed: %s", namespace, name, patch.name, exc)
                continue
            self._cache.apply_pod("MODIFIED", pod)
        return failed

    async def _delete(self, key: FleetKey, delete: Delete) -> None:
        namespace, _ = key
        if delete.reason == "NodeGone":
            # The node cache may be behind (e.g. just after start-up): confirm before a forced delete.
            node = self._node_of(key, delete.name)
            if node is not None and await self._writer.node_exists(node):
                return
        existed = await self._writer.delete_pod(namespace, delete.name, force=delete.force)
        if existed and not delete.force:
            when = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._cache.mark_pod_deleting(key, delete.name, when)
        else:
            self._cache.forget_pod(key, delete.name)

    def _node_of(self, key: FleetKey, pod_name: str) -> str | None:
        for pod in self._cache.pods_of(key):
            if pod.get("metadata", {}).get("name") == pod_name:
                node = (pod.get("spec") or {}).get("nodeName")
                return str(node) if node else None
        return None

    async def _event(self, fleet: dict[str, Any], kind: str, reason: str, message: str) -> None:
        try:
            await self._writer.post_event(fleet, kind, reason, message)
        except Exception as exc:  # events are best effort
            log.debug("event %s not posted: %s", reason, exc)


def _previous_status(fleet: dict[str, Any]) -> InferenceFleetStatus | None:
    raw = fleet.get("status")
    if not raw:
        return None
    try:
        return InferenceFleetStatus.model_validate(raw)
    except ValidationError:
        return None
