"""The Grafana dashboard queries only metrics that exist: the router's, the engines', the placement
scheduler's and the operator's own (collected from their metric classes), plus named
kube-state-metrics series."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from flotilla.enginesim.metrics import EngineMetrics
from flotilla.operator.metrics import OperatorMetrics
from flotilla.placement.kube.telemetry import PlacementMetrics
from flotilla.router.metrics import RouterMetrics

# Placement panels read where pods landed from kube-state-metrics (not a flotilla component).
KUBE_STATE_METRICS = {"kube_pod_info", "kube_pod_status_scheduled"}
METRIC = re.compile(r"\b(?:flotilla_|vllm:|kube_)[A-Za-z0-9_:]*")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def router_series() -> set[str]:
    return exported(RouterMetrics(CollectorRegistry()).registry)


def engine_series() -> set[str]:
    registry = CollectorRegistry()
    EngineMetrics(registry, model_name="m", cache_info={"block_size": "16"})
    return exported(registry)


def placement_series() -> set[str]:
    return exported(PlacementMetrics(CollectorRegistry()).registry)


def operator_series() -> set[str]:
    return exported(OperatorMetrics(CollectorRegistry()).registry)


def queries(chart: Path) -> list[str]:
    dashboard: dict[str, Any] = json.loads((chart / "files" / "flotilla-dashboard.json").read_text())
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return out


def test_dashboard_uses_only_exported_metrics(chart: Path) -> None:
    known = router_series() | engine_series() | placement_series() | operator_series() | KUBE_STATE_METRICS
    used = {name for expr in queries(chart) for name in METRIC.findall(expr)}
    assert used, "no queries found"
    assert used <= known, f"unknown metrics: {sorted(used - known)}"


def test_dashboard_shows_every_router_metric(chart: Path) -> None:
    used = {name for expr in queries(chart) for name in METRIC.findall(expr)}
    families = {n.removesuffix("_bucket").removesuffix("_total") for n in used}
    router = {f.name for f in RouterMetrics(CollectorRegistry()).registry.collect()}
    assert router <= families, f"router metrics without a panel: {sorted(router - families)}"


def test_dashboard_shows_every_operator_metric(chart: Path) -> None:
    used = {name for expr in queries(chart) for name in METRIC.findall(expr)}
    families = {n.removesuffix("_bucket").removesuffix("_total") for n in used}
    operator = {f.name for f in OperatorMetrics(CollectorRegistry()).registry.collect()}
    assert operator <= families, f"operator metrics without a panel: {sorted(operator - families)}"


def test_dashboard_is_in_the_configmap(render: Any) -> None:
    docs = render()
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["flotilla.json"])["uid"] == "flotilla-overview"
