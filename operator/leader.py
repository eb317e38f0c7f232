"""Leader election on a coordination.k8s.io/v1 Lease, so several operator replicas can run.

Only the holder reconciles; the others wait to take over once the holder stops renewing. A holder
that fails to renew before its lease would expire stops itself (crash-only, like controller-runtime):
it cannot know whether another replica has already taken over, so it must not act any longer.
Updates use the Lease's resourceVersion, so two candidates cannot both win one round.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flotilla.operator.config import LeaderConfig

log = logging.getLogger("flotilla.operator.leader")


def _now_micro(now: float) -> str:
    return datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class LostLeadershipError(RuntimeError):
    pass


class LeaderElector:
    def __init__(self, leases: Any, config: LeaderConfig, clock: Callable[[], float]) -> None:
        """`leases` is a kubernetes_asyncio CoordinationV1Api (or a fake with its lease methods)."""
        self._api = leases
        self._config = config
        self._clock = clock
        self.identity = config.identity or f"{socket.gethostname()}-{os.getpid()}"
        self.requests = 0
        # (resourceVersion, acquireTime, leaseTransitions) of the Lease this process last wrote.
        self._held: tuple[str, str | None, int] | None = None

    async def _try(self) -> bool:
        """One acquire-or-renew round; True when this process holds the lease afterwards."""
        from kubernetes_asyncio.client.exceptions import ApiException

        cfg = self._config
        now = self._clock()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(cfg.lease_duration_s)),
            "renewTime": _now_micro(now),
        }
        if self._held is not None:
            # The holder renews from the Lease it last wrote: one request per renewal. Its
            # resourceVersion makes the write fail if anyone changed the Lease since.
            body = {
                "metadata": {"name": cfg.name, "namespace": cfg.namespace, "resourceVersion": self._held[0]},
                "spec": {**spec, "acquireTime": self._held[1], "leaseTransitions": self._held[2]},
            }
            self.requests += 1
            try:
                written = await self._api.replace_namespaced_lease(cfg.name, cfg.namespace, body)
            except ApiException as exc:
                self._held = None
                if exc.status != 409:
                    raise
            else:
                self._remember(written)
                return True
        self.requests += 1
        try:
            lease = await self._api.read_namespaced_lease(cfg.name, cfg.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": {**spec, "acquireTime": _now_micro(now), "leaseTransitions": 0},
            }
            self.requests += 1
            try:
                written = await self._api.create_namespaced_lease(cfg.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
            self._remember(written)
            return True
        holder = lease.spec.holder_identity
        renewed = _parse(lease.spec.renew_time) or 0.0
        duration = lease.spec.lease_duration_seconds or cfg.lease_duration_s
        if holder not in (None, "", self.identity) and renewed + duration > now:
            return False
        transitions = lease.spec.lease_transitions or 0
        body = {
            "metadata": {
                "name": cfg.name,
                "namespace": cfg.namespace,
                "resourceVersion": lease.metadata.resource_version,
            },
            "spec": {
                **spec,
                "acquireTime": _now_micro(now) if holder != self.identity else _iso(lease.spec.acquire_time),
                "leaseTransitions": transitions + (holder != self.identity),
            },
        }
        self.requests += 1
        try:
            written = await self._api.replace_namespaced_lease(cfg.name, cfg.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # someone else updated it first
                return False
            raise
        self._remember(written)
        return True

    def _remember(self, lease: Any) -> None:
        self._held = (
            lease.metadata.resource_version,
            _iso(lease.spec.acquire_time),
            lease.spec.lease_transitions or 0,
        )

    async def acquire(self) -> None:
        """Wait until this process holds the lease."""
        while True:
            try:
                if await self._try():
                    log.info("leader election: %s holds lease %s", self.identity, self._config.name)
                    return
            except Exception as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(self._config.renew_period_s)

    async def hold(self) -> None:
        """Renew until renewal fails for a whole lease duration; then raise LostLeadershipError."""
        last_ok = self._clock()
        while True:
            await asyncio.sleep(self._config.renew_period_s)
            try:
                if await self._try():
                    last_ok = self._clock()
                    continue
                raise LostLeadershipError(f"lease {self._config.name} taken by another replica")
            except LostLeadershipError:
                raise
            except Exception as exc:
                log.warning("leader election: renew failed: %s", exc)
            if self._clock() - last_ok > self._config.lease_duration_s * 0.8:
                raise LostLeadershipError(f"could not renew lease {self._config.name}")

    async def release(self) -> None:
        """Give the lease up on a clean shutdown, so a standby takes over without waiting."""
        try:
            lease = await self._api.read_namespaced_lease(self._config.name, self._config.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            body = {
                "metadata": {
                    "name": self._config.name,
                    "namespace": self._config.namespace,
                    "resourceVersion": lease.metadata.resource_version,
                },
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": None},
            }
            await self._api.replace_namespaced_lease(self._config.name, self._config.namespace, body)
            self._held = None
        except Exception as exc:
            log.debug("lease release failed: %s", exc)


def _iso(value: Any) -> str | None:
    ts = _parse(value)
    return None if ts is None else _now_micro(ts)
