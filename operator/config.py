"""Operator settings, built once from the command line and passed to everything that needs them.

Intervals are settings, not constants, so the e2e tests can run the same code with short timers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class RenderConfig(BaseModel):
    """What the operator adds to every pod beyond the fleet's spec (cluster-wide choices)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tolerate_kwok: bool = False
    """Tolerate KWOK's fake-node taint (local clusters, tests and benchmarks only)."""
    run_as_user: Annotated[int, Field(ge=1)] = 1000
    """Non-root user the engine runs as."""
    scheduler_name: str = "flotilla"
    """schedulerName of fleet pods."""


class BackoffConfig(BaseModel):
    """Delay before replacing a pod that failed: base * 2**failures, capped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_s: Annotated[float, Field(ge=0)] = 10.0
    max_s: Annotated[float, Field(ge=0)] = 300.0

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return float(min(self.max_s, self.base_s * 2 ** min(failures - 1, 30)))


class LeaderConfig(BaseModel):
    """Leader election through a coordination.k8s.io Lease, so several replicas can run safely."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    namespace: str = "default"
    name: str = "flotilla-operator"
    lease_duration_s: Annotated[float, Field(gt=0)] = 15.0
    renew_period_s: Annotated[float, Field(gt=0)] = 5.0
    identity: str | None = None
    """Holder identity; defaults to hostname and process id."""


class OperatorConfig(BaseModel):
    """Everything `flotilla operator run` can be told."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: list[str] = []
    """Namespaces to watch; empty watches the whole cluster."""
    kubeconfig: Path | None = None
    """Kubeconfig file; omitted uses in-cluster credentials, then $KUBECONFIG."""
    resync_s: Annotated[float, Field(gt=0)] = 60.0
    """Every fleet is reconciled at least this often, even without events."""
    node_lost_grace_s: Annotated[float, Field(ge=0)] = 60.0
    """How long a node may be NotReady before its fleet pods are replaced elsewhere."""
    pod_event_delay_s: Annotated[float, Field(ge=0)] = 0.2
    """Pod events reconcile their fleet after this delay, so a burst of them (pods bound, started,
    turning ready) costs one reconcile and one status write instead of one each."""
    workers: Annotated[int, Field(ge=1, le=64)] = 4
    """Fleets reconciled concurrently."""
    render: RenderConfig = RenderConfig()
    backoff: BackoffConfig = BackoffConfig()
    leader: LeaderConfig = LeaderConfig()
    liveness_endpoint: str | None = None
    """Kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz."""
    metrics_port: Annotated[int | None, Field(ge=0, le=65535)] = None
    """Port of the Prometheus /metrics endpoint (`flotilla_operator_*`); None serves none."""
    metrics_host: str = "0.0.0.0"
    """Address the /metrics endpoint listens on."""
