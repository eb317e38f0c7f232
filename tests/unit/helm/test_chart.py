"""The chart renders what the components need, with the settings they actually accept.

Each test renders with the real helm binary and checks the result against the components' own
sources: the CRD against crdgen, the operator's rules against operator/rbac.py, every container's
arguments against the real `flotilla` command line, the router's config against RouterConfig.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import typer

from flotilla.api import crdgen
from flotilla.cli import build_app
from flotilla.operator import rbac as operator_rbac
from flotilla.router.config import RouterConfig

MONITORING = "monitoring.coreos.com/v1"


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_helm_lint_strict(helm: Path, chart: Path) -> None:
    done = subprocess.run(
        [str(helm), "lint", "--strict", str(chart)], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_chart_crds_are_the_generated_ones(chart: Path, repo: Path) -> None:
    generated = crdgen.render()
    assert (chart / "crds" / crdgen.CRD_FILENAME).read_text() == generated, (
        "helm/flotilla/crds is stale: run `make crds`"
    )
    assert sorted(p.name for p in (chart / "crds").iterdir()) == sorted(
        p.name for p in (repo / "crds").glob("*.yaml")
    )


def test_default_render_has_every_component(render: Any) -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {
        "demo-flotilla-operator",
        "demo-flotilla-placement",
        "demo-flotilla-router",
        "demo-flotilla-nats",  # the router replicas' shared state
    }
    assert set(by_kind(docs, "Service")) == {"demo-flotilla-router", "demo-flotilla-nats"}
    assert "demo-flotilla-dashboard" in by_kind(docs, "ConfigMap")
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    # No Prometheus Operator in the cluster: no ServiceMonitor or PodMonitor.
    assert not [d for d in docs if d["apiVersion"] == MONITORING]
    assert all(d["metadata"].get("namespace", "flotilla-system") == "flotilla-system" for d in docs)


def test_operator_rbac_is_the_operators_own(render: Any) -> None:
    docs = render()
    role = by_kind(docs, "ClusterRole")["demo-flotilla-operator"]
    assert role["rules"] == operator_rbac.CLUSTER_RULES
    lease = by_kind(docs, "Role")["demo-flotilla-operator-leader-election"]
    assert lease["rules"] == operator_rbac.LEASE_RULES
    binding = by_kind(docs, "RoleBinding")["demo-flotilla-operator-leader-election"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "demo-flotilla-operator", "namespace": "flotilla-system"}
    ]


def _leaf(app: typer.Typer, args: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = typer.main.get_command(app)
    while isinstance(command, click.Group):
        name, *args = args
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"flotilla has no sub-command {name}"
        command = sub
    return command, args


@pytest.mark.parametrize(
    "values",
    [
        (),
        ("--set", "operator.watchNamespaces={a,b}", "--set", "operator.leaderElection.enabled=false"),
        ("--set", "operator.tolerateKwok=true", "--set", "placement.workers=4"),
    ],
)
def test_every_container_runs_a_real_flotilla_command(render: Any, values: tuple[str, ...]) -> None:
    """The rendered arguments parse with the real CLI (unknown flags or bad values would fail)."""
    app = build_app()
    for name, deployment in by_kind(render(*values), "Deployment").items():
        if name.endswith("-nats"):  # NATS's own image (router.sharedState): not a flotilla command
            continue
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        command, rest = _leaf(app, list(container["args"]))
        # $(POD_NAME) is expanded by the kubelet; any string parses the same way.
        command.make_context(command.name or "", [a.replace("$(POD_NAME)", "pod-0") for a in rest])


def test_operator_args_follow_values(render: Any) -> None:
    docs = render("--set", "operator.watchNamespaces={team-a,team-b}")
    (container,) = by_kind(docs, "Deployment")["demo-flotilla-operator"]["spec"]["template"]["spec"][
        "containers"
    ]
    args = container["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--leader-elect" in args
    assert "--lease-namespace=flotilla-system" in args
    assert "--identity=$(POD_NAME)" in args


def test_router_probes_ready_for_traffic_and_health_for_liveness(render: Any) -> None:
    import yaml
    from prometheus_client import CollectorRegistry
    from starlette.routing import Route

    from flotilla.router.app import Router, build_discovery

    docs = render()
    (container,) = by_kind(docs, "Deployment")["demo-flotilla-router"]["spec"]["template"]["spec"][
        "containers"
    ]
    # Readiness is /ready (fails while starting or draining); a failing /health would restart the pod.
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    text = by_kind(docs, "ConfigMap")["demo-flotilla-router"]["data"]["router.yaml"]
    config = RouterConfig.model_validate(yaml.safe_load(text))
    app = Router(config, build_discovery(config), registry=CollectorRegistry()).app()
    served = {r.path for r in app.routes if isinstance(r, Route) and "GET" in (r.methods or ())}
    assert {"/ready", "/health"} <= served


def test_router_config_is_a_valid_router_config(render: Any) -> None:
    import yaml

    docs = render("--set", "router.watchNamespace=serving", "--set", "router.config.max_queue_per_model=7")
    text = by_kind(docs, "ConfigMap")["demo-flotilla-router"]["data"]["router.yaml"]
    config = RouterConfig.model_validate(yaml.safe_load(text))
    assert config.kubernetes is not None and config.kubernetes.namespace == "serving"
    assert config.static is None
    assert (config.host, config.port, config.max_queue_per_model) == ("0.0.0.0", 8080, 7)
    assert config.default_policy == "least_request"
    # Confined to one namespace, the router's RBAC is a Role there.
    assert "demo-flotilla-router" in by_kind(docs, "Role")
    assert "demo-flotilla-router" not in by_kind(docs, "ClusterRole")


def test_every_pod_is_locked_down(render: Any) -> None:
    for deployment in by_kind(render(), "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_placement_runs_alone(render: Any) -> None:
    placement = by_kind(render("--set", "placement.workers=2"), "Deployment")["demo-flotilla-placement"]
    assert placement["spec"]["replicas"] == 1
    assert placement["spec"]["strategy"] == {"type": "Recreate"}


def test_components_can_be_disabled(render: Any) -> None:
    docs = render("--set", "placement.enabled=false", "--set", "router.enabled=false")
    assert set(by_kind(docs, "Deployment")) == {"demo-flotilla-operator"}
    names = {d["metadata"]["name"] for d in docs}
    assert not any("placement" in n or "router" in n for n in names)


def test_autoscaling_replaces_fixed_replicas(render: Any) -> None:
    docs = render("--set", "router.autoscaling.enabled=true", "--set", "router.autoscaling.maxReplicas=5")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["demo-flotilla-router"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "demo-flotilla-router"
    assert hpa["spec"]["maxReplicas"] == 5
    assert "replicas" not in by_kind(docs, "Deployment")["demo-flotilla-router"]["spec"]


def test_monitors_only_with_the_prometheus_operator(render: Any) -> None:
    docs = render(api_versions=(MONITORING,))
    assert set(by_kind(docs, "ServiceMonitor")) == {"demo-flotilla-router"}
    assert set(by_kind(docs, "PodMonitor")) == {"demo-flotilla-engines", "demo-flotilla-components"}
    monitor = by_kind(docs, "PodMonitor")["demo-flotilla-engines"]
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "flotilla"}
    off = render(
        "--set",
        "metrics.podMonitor.enabled=false",
        "--set",
        "metrics.componentMonitor.enabled=false",
        api_versions=(MONITORING,),
    )
    assert not by_kind(off, "PodMonitor") and by_kind(off, "ServiceMonitor")


def test_component_monitor_scrapes_the_metrics_port_of_operator_and_placement(render: Any) -> None:
    docs = render(api_versions=(MONITORING,))
    monitor = by_kind(docs, "PodMonitor")["demo-flotilla-components"]
    (expr,) = monitor["spec"]["selector"]["matchExpressions"]
    assert expr["key"] == "app.kubernetes.io/component" and expr["values"] == ["operator", "placement"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    for name in ("demo-flotilla-operator", "demo-flotilla-placement"):
        pod = by_kind(docs, "Deployment")[name]["spec"]["template"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/component"] in expr["values"]
        (container,) = pod["spec"]["containers"]
        assert "metrics" in {p["name"] for p in container["ports"]}
    alone = render("--set", "placement.enabled=false", api_versions=(MONITORING,))
    only = by_kind(alone, "PodMonitor")["demo-flotilla-components"]
    assert only["spec"]["selector"]["matchExpressions"][0]["values"] == ["operator"]


def test_operator_serves_metrics_on_its_own_port(render: Any) -> None:
    docs = render("--set", "operator.metricsPort=9100")
    (container,) = by_kind(docs, "Deployment")["demo-flotilla-operator"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert "--metrics-port=9100" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9100}


@pytest.mark.parametrize(
    "bad",
    [
        "operator.replicaz=2",  # a typo
        "router.config.port=9000",  # set by the chart
        "operator.logLevel=LOUD",
        "router.service.type=Ingress",
        "placement.workers=-1",
        "operator.metricsPort=0",
        "router.config.peers.url=nats://x:4222",  # set by the chart (router.sharedState)
        "router.sharedState.url=redis://x:6379",
    ],
)
def test_schema_refuses_bad_values(helm: Path, chart: Path, bad: str) -> None:
    argv = [str(helm), "template", "x", str(chart), "--kube-version", "1.35.0", "--set", bad]
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    assert done.returncode != 0
    assert "schema" in done.stderr.lower() or "values don't meet" in done.stderr.lower(), done.stderr


def test_operator_metrics_port_must_differ_from_health_port(helm: Path, chart: Path) -> None:
    argv = [str(helm), "template", "x", str(chart), "--kube-version", "1.35.0"]
    done = subprocess.run(
        [*argv, "--set", "operator.metricsPort=8080"], check=False, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "operator.metricsPort must differ from operator.healthPort" in done.stderr


def test_router_replicas_share_state_through_the_charts_nats_with_a_token(render: Any) -> None:
    import yaml

    docs = render()
    text = by_kind(docs, "ConfigMap")["demo-flotilla-router"]["data"]["router.yaml"]
    config = RouterConfig.model_validate(yaml.safe_load(text))
    assert config.peers is not None
    assert config.peers.url == "nats://demo-flotilla-nats:4222"
    assert config.peers.token_file == "/etc/flotilla-nats/token"
    nats = by_kind(docs, "Deployment")["demo-flotilla-nats"]["spec"]["template"]["spec"]
    (server,) = nats["containers"]
    assert "--auth=$(NATS_TOKEN)" in server["args"]
    assert server["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "demo-flotilla-nats", "key": "token"}
    assert nats["automountServiceAccountToken"] is False  # it needs no Kubernetes API
    assert by_kind(docs, "Secret")["demo-flotilla-nats"]["data"]["token"]
    router = by_kind(docs, "Deployment")["demo-flotilla-router"]["spec"]["template"]["spec"]
    (container,) = router["containers"]
    assert {"name": "nats-token", "mountPath": "/etc/flotilla-nats", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert any(e["name"] == "POD_NAME" for e in container["env"])  # the replica's id among its peers


def test_shared_state_can_use_an_existing_nats_or_be_off(render: Any) -> None:
    import yaml

    def peers(docs: list[dict[str, Any]]) -> Any:
        text = by_kind(docs, "ConfigMap")["demo-flotilla-router"]["data"]["router.yaml"]
        return RouterConfig.model_validate(yaml.safe_load(text)).peers

    existing = render("--set", "router.sharedState.url=nats://nats.messaging:4222")
    assert "demo-flotilla-nats" not in by_kind(existing, "Deployment")
    assert not [d for d in existing if d["kind"] == "Secret"]
    assert peers(existing).url == "nats://nats.messaging:4222" and peers(existing).token_file is None
    with_secret = render(
        "--set",
        "router.sharedState.url=tls://nats:4222",
        "--set",
        "router.sharedState.existingSecret=nats-auth",
    )
    assert peers(with_secret).token_file == "/etc/flotilla-nats/token"
    off = render("--set", "router.sharedState.enabled=false")
    assert peers(off) is None
    assert not [d for d in off if "nats" in d["metadata"]["name"]]
