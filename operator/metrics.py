"""The operator's Prometheus metrics (`flotilla_operator_*`) in a registry passed in by the caller.

Why these: "is the operator keeping up" (reconciles by result, their latency, the work queue's
depth), "is it failing" (reconciles that raised or left API writes failed, API errors by verb and
resource), "what does the fleet look like to it" (desired vs ready replicas per fleet, as last
written to status), "how much does it cost the API server" (requests by verb and resource, the
benchmark's steady-state number) and "which replica acts" (leader).

Event-driven numbers (reconciles, latency) are updated by the worker as it goes; state (fleets,
replicas, queue depth, request counts) is read from the live objects at scrape time by a collector,
so a deleted fleet's series vanish with it and nothing is counted twice. Scrapes run on the
operator's event loop (see flotilla.metricsserver), the same thread that mutates the cache: no locks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from flotilla.operator.cache import ClusterCache
from flotilla.operator.kubeclient import FAILED_SUFFIX

PREFIX = "flotilla_operator"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# reconciles{result}
SUCCESS = "success"  # every planned action was carried out (or nothing was needed)
PARTIAL = "partial"  # the reconcile ran, but some API writes failed: it is retried shortly
ERROR = "error"  # the reconcile raised: it is retried shortly

# KubeWriter's request counters are keyed by its method's verb; this names the API verb and resource.
_REQUESTS: dict[str, tuple[str, str]] = {
    "create_pod": ("create", "pods"),
    "delete_pod": ("delete", "pods"),
    "patch_pod": ("patch", "pods"),
    "patch_status": ("patch", "inferencefleets/status"),
    "get_node": ("get", "nodes"),
    "list_nodes": ("list", "nodes"),
    "create_event": ("create", "events"),
}
LEASE_KEY = "lease"
"""Key under which the leader elector's requests (Lease reads and writes) are reported."""


def request_labels(key: str) -> tuple[str, str]:
    """(verb, resource) of a request counter key; unknown keys keep their name as the verb."""
    if key == LEASE_KEY:
        return ("get_or_update", "leases")
    return _REQUESTS.get(key, (key, "unknown"))


@dataclass
class _Sources:
    cache: ClusterCache
    queue_depth: Callable[[], int]
    requests: Callable[[], Mapping[str, int]]


class _StateCollector:
    """Reads state at scrape time; before `bind` it yields the families with no samples."""

    def __init__(self) -> None:
        self.sources: _Sources | None = None

    def collect(self) -> Iterable[Metric]:
        fleets = GaugeMetricFamily(f"{PREFIX}_fleets", "InferenceFleets in the operator's cache.")
        desired = GaugeMetricFamily(
            f"{PREFIX}_fleet_desired_replicas",
            "spec.replicas of each fleet.",
            labels=["namespace", "fleet"],
        )
        ready = GaugeMetricFamily(
            f"{PREFIX}_fleet_ready_replicas",
            "status.readyReplicas of each fleet, as the operator last wrote it.",
            labels=["namespace", "fleet"],
        )
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Fleets waiting in the work queue.")
        requests = CounterMetricFamily(
            f"{PREFIX}_api_requests",
            "Requests the operator made to the Kubernetes API (watches and initial lists excluded).",
            labels=["verb", "resource"],
        )
        errors = CounterMetricFamily(
            f"{PREFIX}_api_errors",
            "Requests the Kubernetes API refused or failed, by verb and resource.",
            labels=["verb", "resource"],
        )
        src = self.sources
        if src is not None:
            fleets.add_metric([], len(src.cache.fleets))
            for (namespace, name), fleet in sorted(src.cache.fleets.items()):
                spec: dict[str, Any] = fleet.get("spec") or {}
                status: dict[str, Any] = fleet.get("status") or {}
                if isinstance(spec.get("replicas"), int):
                    desired.add_metric([namespace, name], spec["replicas"])
                ready.add_metric([namespace, name], int(status.get("readyReplicas") or 0))
            depth.add_metric([], src.queue_depth())
            for key, count in sorted(src.requests().items()):
                family, base = (
                    (errors, key[: -len(FAILED_SUFFIX)]) if key.endswith(FAILED_SUFFIX) else (requests, key)
                )
                family.add_metric(list(request_labels(base)), count)
        return [fleets, desired, ready, depth, requests, errors]


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "Fleet reconciles by result: success, partial (some API writes failed), error (raised).",
            ["result"],
            registry=registry,
        )
        self.reconcile_seconds = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Wall time of one fleet reconcile (plan, API writes, status write).",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.leader = Gauge(
            f"{PREFIX}_leader",
            "1 while this replica reconciles (holds the Lease, or runs without election), else 0.",
            registry=registry,
        )
        for result in (SUCCESS, PARTIAL, ERROR):
            self.reconciles.labels(result)  # every result is exported from the start (rate() needs 0s)
        self._state = _StateCollector()
        registry.register(self._state)

    def bind(
        self,
        cache: ClusterCache,
        queue_depth: Callable[[], int],
        requests: Callable[[], Mapping[str, int]],
    ) -> None:
        """Report this cache, queue and request counts from now on."""
        self._state.sources = _Sources(cache, queue_depth, requests)

    def observe_reconcile(self, result: str, seconds: float) -> None:
        self.reconciles.labels(result).inc()
        self.reconcile_seconds.observe(seconds)
