"""One reconcile against a fake API: the plan is carried out, written through, and idempotent."""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from flotilla.api import labels
from flotilla.operator.app import Runtime, reconcile_once, request_counts
from flotilla.operator.cache import ClusterCache
from flotilla.operator.config import OperatorConfig
from flotilla.operator.controller import ERROR_RETRY_S, FleetController
from flotilla.operator.metrics import OperatorMetrics
from flotilla.operator.workqueue import WorkQueue

NOW = 1_700_000_000.0


class FakeApi:
    """Records writes; returns objects like the API server would (names, resourceVersions)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.nodes: set[str] = set()
        self._rv = itertools.count(100)
        self._names = itertools.count()

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        pod = copy.deepcopy(body)
        meta = pod["metadata"]
        meta["name"] = f"{meta.pop('generateName')}{next(self._names)}"
        meta["resourceVersion"] = str(next(self._rv))
        meta["creationTimestamp"] = "2023-11-14T22:13:20Z"
        self.calls.append(("create_pod", meta["name"]))
        return pod

    async def delete_pod(self, namespace: str, name: str, *, force: bool) -> bool:
        self.calls.append(("delete_pod" + ("_force" if force else ""), name))
        return True

    async def patch_pod_metadata(
        self, namespace: str, name: str, pod_labels: dict[str, str], annotations: dict[str, str]
    ) -> dict[str, Any]:
        self.calls.append(("patch_pod", name))
        return {"metadata": {"name": name, "namespace": namespace, "labels": pod_labels}}

    async def patch_fleet_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch_status", name))
        self.status = status
        return {
            **self.fleet,
            "status": status,
            "metadata": {**self.fleet["metadata"], "resourceVersion": str(next(self._rv))},
        }

    async def node_exists(self, name: str) -> bool:
        self.calls.append(("get_node", name))
        return name in self.nodes

    async def post_event(self, fleet: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.calls.append(("event", reason))


def setup(replicas: int = 2, **spec: Any) -> tuple[FleetController, ClusterCache, FakeApi]:
    cache = ClusterCache()
    api = FakeApi()
    fleet = {
        "apiVersion": labels.API_VERSION,
        "kind": labels.KIND,
        "metadata": {"name": "f", "namespace": "ns", "uid": "u1", "generation": 1, "resourceVersion": "1"},
        "spec": {"model": {"name": "m", "source": "o/m"}, "replicas": replicas, **spec},
    }
    api.fleet = fleet
    cache.apply_fleet("ADDED", fleet)
    cache.apply_node(
        "ADDED", {"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    )
    return FleetController(cache, api, OperatorConfig(), lambda: NOW), cache, api


def make_running(cache: ClusterCache, node: str = "n1") -> None:
    for pod in cache.pods_of(("ns", "f")):
        pod["spec"]["nodeName"] = node
        pod["status"] = {
            "phase": "Running",
            "podIP": "127.128.0.9",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
        pod["metadata"]["resourceVersion"] = str(int(pod["metadata"]["resourceVersion"]) + 1)


async def test_creates_pods_writes_through_and_reports() -> None:
    ctl, cache, api = setup(replicas=2)
    out = await ctl.reconcile(("ns", "f"))
    assert [c for c in api.calls if c[0] == "create_pod"] == [
        ("create_pod", "f-0-0"),
        ("create_pod", "f-1-1"),
    ]
    assert ("event", "SuccessfulCreate") in api.calls
    assert len(cache.pods_of(("ns", "f"))) == 2, "created pods are in the cache before any watch event"
    assert api.status["replicas"] == 2 and api.status["readyReplicas"] == 0
    assert out.requeue_after is None


async def test_second_reconcile_makes_no_requests() -> None:
    ctl, cache, api = setup(replicas=2)
    await ctl.reconcile(("ns", "f"))
    make_running(cache)
    await ctl.reconcile(("ns", "f"))
    assert api.status["readyReplicas"] == 2
    api.calls.clear()
    await ctl.reconcile(("ns", "f"))
    await ctl.reconcile(("ns", "f"))
    assert api.calls == [], "steady state: nothing to write"


async def test_gone_node_is_confirmed_before_force_delete() -> None:
    ctl, cache, api = setup(replicas=1)
    await ctl.reconcile(("ns", "f"))
    make_running(cache, node="n-unknown")
    api.nodes = {"n-unknown"}  # the cache is behind: the node exists
    api.calls.clear()
    await ctl.reconcile(("ns", "f"))
    assert ("get_node", "n-unknown") in api.calls
    assert not [c for c in api.calls if c[0].startswith("delete_pod")]
    api.nodes = set()
    api.calls.clear()
    await ctl.reconcile(("ns", "f"))
    assert [c[0] for c in api.calls if c[0].startswith(("delete", "create"))] == [
        "delete_pod_force",
        "create_pod",
    ]


async def test_node_deletion_missed_by_the_watch_is_caught_by_the_relist() -> None:
    # Kopf's re-list after a broken watch replays only existing nodes: n1's DELETED never comes and
    # the cache holds it Ready, so reconciles change nothing until the periodic LIST drops it.
    ctl, cache, api = setup(replicas=1)
    await ctl.reconcile(("ns", "f"))
    make_running(cache, node="n1")
    api.calls.clear()
    await ctl.reconcile(("ns", "f"))
    assert not [c for c in api.calls if c[0].startswith("delete_pod")]
    assert cache.replace_nodes([], list_version=500) == ["n1"]
    await ctl.reconcile(("ns", "f"))
    assert [c[0] for c in api.calls if c[0].startswith(("delete", "create", "get_node"))] == [
        "get_node",
        "delete_pod_force",
        "create_pod",
    ]


async def test_pod_in_graceful_deletion_on_a_vanished_node_is_forced() -> None:
    ctl, cache, api = setup(replicas=2)
    await ctl.reconcile(("ns", "f"))
    make_running(cache, node="n1")
    await ctl.reconcile(("ns", "f"))
    api.fleet["spec"]["replicas"] = 1
    cache.fleets[("ns", "f")]["spec"]["replicas"] = 1
    await ctl.reconcile(("ns", "f"))  # scale-down: a graceful delete, marked in the cache
    (leaving,) = [p for p in cache.pods_of(("ns", "f")) if p["metadata"].get("deletionTimestamp")]
    cache.apply_node("DELETED", {"metadata": {"name": "n1"}})
    api.calls.clear()
    await ctl.reconcile(("ns", "f"))
    assert ("delete_pod_force", leaving["metadata"]["name"]) in api.calls


async def test_missing_priority_class_blocks_creation() -> None:
    ctl, cache, api = setup(replicas=1, priority={"className": "gold"})
    out = await ctl.reconcile(("ns", "f"))
    assert not [c for c in api.calls if c[0] == "create_pod"]
    assert out.requeue_after is not None
    assert {c["type"]: c["reason"] for c in api.status["conditions"]}["Progressing"] == "Blocked"
    cache.apply_priority_class("ADDED", {"metadata": {"name": "gold"}, "value": 1000})
    await ctl.reconcile(("ns", "f"))
    (pod,) = cache.pods_of(("ns", "f"))
    assert pod["metadata"]["labels"][labels.LABEL_TIER] == "1000"
    assert pod["spec"]["priorityClassName"] == "gold"


async def test_deleted_fleet_is_left_to_the_garbage_collector() -> None:
    ctl, cache, api = setup()
    cache.apply_fleet("DELETED", api.fleet)
    out = await ctl.reconcile(("ns", "f"))
    assert api.calls == [] and out.requeue_after is None


def _sample(registry: CollectorRegistry, name: str, **labels_: str) -> float | None:
    return registry.get_sample_value(name, labels_)


def _runtime(ctl: FleetController, cache: ClusterCache, ticks: list[float]) -> Runtime:
    clock = iter(ticks)
    rt = Runtime(
        config=OperatorConfig(),
        cache=cache,
        queue=WorkQueue(),
        controller=ctl,
        writer=SimpleNamespace(requests=Counter()),  # type: ignore[arg-type]
        metrics=OperatorMetrics(CollectorRegistry()),
        clock=lambda: next(clock),
    )
    rt.metrics.bind(cache, lambda: len(rt.queue), lambda: request_counts(rt))
    return rt


async def test_reconcile_updates_metrics() -> None:
    ctl, cache, api = setup(replicas=2)
    rt = _runtime(ctl, cache, [10.0, 10.25, 20.0, 20.5])
    reg = rt.metrics.registry
    assert _sample(reg, "flotilla_operator_fleet_ready_replicas", namespace="ns", fleet="f") == 0
    await reconcile_once(rt, ("ns", "f"))
    assert _sample(reg, "flotilla_operator_reconciles_total", result="success") == 1
    assert _sample(reg, "flotilla_operator_reconcile_duration_seconds_count") == 1
    assert _sample(reg, "flotilla_operator_reconcile_duration_seconds_sum") == 0.25
    assert _sample(reg, "flotilla_operator_reconcile_duration_seconds_bucket", le="0.25") == 1
    assert _sample(reg, "flotilla_operator_reconcile_duration_seconds_bucket", le="0.1") == 0
    assert _sample(reg, "flotilla_operator_fleets") == 1
    assert _sample(reg, "flotilla_operator_fleet_desired_replicas", namespace="ns", fleet="f") == 2
    make_running(cache)
    await reconcile_once(rt, ("ns", "f"))
    assert api.status["readyReplicas"] == 2
    assert _sample(reg, "flotilla_operator_fleet_ready_replicas", namespace="ns", fleet="f") == 2
    assert _sample(reg, "flotilla_operator_reconciles_total", result="success") == 2
    assert _sample(reg, "flotilla_operator_reconcile_duration_seconds_sum") == 0.75
    cache.apply_fleet("DELETED", api.fleet)
    assert _sample(reg, "flotilla_operator_fleets") == 0
    assert _sample(reg, "flotilla_operator_fleet_desired_replicas", namespace="ns", fleet="f") is None


class FailingCreates(FakeApi):
    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("quota exceeded")


async def test_failed_writes_and_raised_reconciles_are_counted() -> None:
    _, cache, _ = setup(replicas=1)
    api = FailingCreates()
    api.fleet = cache.fleets[("ns", "f")]
    ctl = FleetController(cache, api, OperatorConfig(), lambda: NOW)
    rt = _runtime(ctl, cache, [0.0, 0.1, 1.0, 1.2])
    requeue = await reconcile_once(rt, ("ns", "f"))
    assert requeue is not None, "a failed write is retried"
    reg = rt.metrics.registry
    assert _sample(reg, "flotilla_operator_reconciles_total", result="partial") == 1
    assert _sample(reg, "flotilla_operator_reconciles_total", result="success") == 0

    async def boom(key: Any) -> Any:
        raise RuntimeError("bug")

    rt.controller = SimpleNamespace(reconcile=boom)  # type: ignore[assignment]
    assert await reconcile_once(rt, ("ns", "f")) == ERROR_RETRY_S
    assert _sample(reg, "flotilla_operator_reconciles_total", result="error") == 1
    assert _sample(reg, "flotilla_operator_reconcile_duration_seconds_count") == 2


async def test_unschedulable_condition_comes_from_the_pods_and_is_stable() -> None:
    """Placement marks pods it cannot place (PodScheduled=False, reason Unschedulable); the operator,
    the fleet status's one writer, reports it and rewrites nothing while it stays true."""
    ctl, cache, api = setup(replicas=1)
    await ctl.reconcile(("ns", "f"))
    (pod,) = cache.pods_of(("ns", "f"))
    why = "0/3 nodes match: 3 have too few free GPUs (need 8)"
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}
        ],
    }
    await ctl.reconcile(("ns", "f"))
    cond = {c["type"]: c for c in api.status["conditions"]}["Unschedulable"]
    assert (cond["status"], cond["reason"]) == ("True", "PodsUnschedulable")
    assert cond["message"].endswith(f"{pod['metadata']['name']}: {why}")
    api.calls.clear()
    await ctl.reconcile(("ns", "f"))
    assert ("patch_status", "f") not in api.calls, "no second writer to undo: nothing to rewrite"
    make_running(cache)  # bound: the API server sets PodScheduled=True
    await ctl.reconcile(("ns", "f"))
    cond = {c["type"]: c for c in api.status["conditions"]}["Unschedulable"]
    assert (cond["status"], cond["reason"]) == ("False", "AllScheduled")


async def test_a_scaled_down_pod_is_marked_deleting_at_the_controllers_clock() -> None:
    ctl, cache, api = setup(replicas=2)
    await ctl.reconcile(("ns", "f"))
    make_running(cache)
    api.fleet = {
        **api.fleet,
        "metadata": {**api.fleet["metadata"], "resourceVersion": "9999", "generation": 2},
        "spec": {**api.fleet["spec"], "replicas": 1},
    }
    cache.apply_fleet("MODIFIED", api.fleet)
    api.calls.clear()
    await ctl.reconcile(("ns", "f"))
    deleted = [name for verb, name in api.calls if verb == "delete_pod"]
    assert len(deleted) == 1
    stamps = {
        p["metadata"]["name"]: p["metadata"].get("deletionTimestamp") for p in cache.pods_of(("ns", "f"))
    }
    assert stamps[deleted[0]] == "2023-11-14T22:13:20Z", "NOW, not the wall clock"
    assert [name for name, stamp in stamps.items() if stamp] == deleted


async def test_refused_router_params_set_a_condition_and_one_warning() -> None:
    router = {"policy": "least_request", "params": {"choices": -1}}
    ctl, cache, api = setup(replicas=1, router=router)
    await ctl.reconcile(("ns", "f"))
    conds = {c["type"]: c for c in api.status["conditions"]}
    assert conds["RoutingAccepted"]["status"] == "False"
    assert conds["RoutingAccepted"]["reason"] == "InvalidRouterParams"
    assert conds["RoutingAccepted"]["message"].startswith(
        "spec.router.params: choices: Input should be greater than or equal to 0"
    )
    assert ("event", "InvalidRouterParams") in api.calls
    assert len(cache.pods_of(("ns", "f"))) == 1, "pods are made regardless: only routing is affected"
    api.calls.clear()
    await ctl.reconcile(("ns", "f"))
    assert ("event", "InvalidRouterParams") not in api.calls, "one Warning per refusal, not per reconcile"

    fixed = copy.deepcopy(cache.fleets[("ns", "f")])
    fixed["spec"]["router"] = {"policy": "least_request"}
    fixed["metadata"]["resourceVersion"] = str(int(fixed["metadata"]["resourceVersion"]) + 1)
    cache.apply_fleet("MODIFIED", fixed)
    await ctl.reconcile(("ns", "f"))
    conds = {c["type"]: c for c in api.status["conditions"]}
    assert conds["RoutingAccepted"]["status"] == "True"
