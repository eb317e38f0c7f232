"""The Helm chart against the real local API server: server-side dry-run of everything it renders,
install / upgrade / uninstall, and its RBAC proven sufficient and minimal by impersonating each
component's ServiceAccount (`kubectl auth can-i --as=system:serviceaccount:NS:SA`).

Pods of the chart's Deployments never run here (there is no image and no container runtime; KWOK's
nodes are tainted): the tests check the objects the API server accepted, not running processes.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from flotilla.localcluster.binaries import find_repo_root
from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.kubectl import Kubectl, KubectlError

pytestmark = pytest.mark.e2e

CHART = find_repo_root(Path(__file__).resolve()) / "helm" / "flotilla"

Helm = Callable[..., str]


@pytest.fixture
def helm(cluster: LocalCluster, tmp_path: Path) -> Helm:
    """Runs the pinned helm against the local cluster, with its caches in the test's tmp dir."""
    env = {
        "HOME": str(tmp_path),
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
        "PATH": "/usr/bin:/bin",
    }

    def run(*args: str, check: bool = True) -> str:
        argv = [str(cluster.binaries.helm), f"--kubeconfig={cluster.kubeconfig}", *args]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout + done.stderr

    return run


@pytest.fixture
def release(helm: Helm, namespace: str) -> Any:
    """A unique release name (cluster-scoped RBAC names include it), uninstalled afterwards."""
    name = f"fl-{uuid.uuid4().hex[:6]}"
    yield name
    helm("uninstall", name, "-n", namespace, "--wait", check=False)


def test_rendered_chart_passes_server_side_dry_run(helm: Helm, kubectl: Kubectl, namespace: str) -> None:
    # No --validate here: with it Helm refuses to render a CRD that already exists without Helm's
    # ownership marks (other e2e tests install it from the models); the server-side dry run below
    # validates every rendered object, the CRD included, against the real API server anyway (it is
    # told the server's version, which --validate would have read).
    server = kubectl.json("version")["serverVersion"]["gitVersion"]
    manifest = helm(
        "template", "dry", str(CHART), "-n", namespace, "--include-crds", "--kube-version", server
    )  # fmt: skip
    kinds = sorted({d["kind"] for d in yaml.safe_load_all(manifest) if d})
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "Service", "ConfigMap"} <= set(kinds)
    out = kubectl.in_namespace(namespace)("apply", "--dry-run=server", "-f", "-", input=manifest)
    assert "dry run" in out and "deployment.apps/dry-flotilla-router" in out
    # The HPA and the namespaced router Role too (not in the default render).
    manifest = helm(
        "template", "dry", str(CHART), "-n", namespace, "--validate",
        "--set", "router.autoscaling.enabled=true", "--set", f"router.watchNamespace={namespace}",
    )  # fmt: skip
    out = kubectl.in_namespace(namespace)("apply", "--dry-run=server", "-f", "-", input=manifest)
    assert "horizontalpodautoscaler.autoscaling/dry-flotilla-router" in out
    assert "role.rbac.authorization.k8s.io/dry-flotilla-router" in out


def test_install_upgrade_uninstall(helm: Helm, kubectl: Kubectl, namespace: str, release: str) -> None:
    k = kubectl.in_namespace(namespace)
    out = helm("install", release, str(CHART), "-n", namespace)
    assert "STATUS: deployed" in out
    assert f"svc/{release}-flotilla-router" in out  # NOTES.txt says how to reach the router
    deployments = {d["metadata"]["name"]: d for d in k.json("get", "deployments")["items"]}
    # nats: the router replicas' shared state (router.sharedState), on by default.
    assert set(deployments) == {
        f"{release}-flotilla-{c}" for c in ("operator", "placement", "router", "nats")
    }
    token = k.json("get", "secret", f"{release}-flotilla-nats")["data"]["token"]
    assert deployments[f"{release}-flotilla-router"]["spec"]["replicas"] == 2
    assert k.json("get", "service", f"{release}-flotilla-router")["spec"]["ports"][0]["port"] == 80
    assert kubectl.json("get", "crd", "inferencefleets.flotilla.dev")["spec"]["group"] == "flotilla.dev"
    for component in ("operator", "placement", "router"):
        kubectl("get", "clusterrole", f"{release}-flotilla-{component}")
    # The chart's CRD accepts the example fleets (CEL rules included).
    out = k("apply", "--dry-run=server", "-f", str(CHART.parent.parent / "examples"))
    assert "inferencefleet.flotilla.dev/chat-llama created (server dry run)" in out
    old_checksum = deployments[f"{release}-flotilla-router"]["spec"]["template"]["metadata"]["annotations"]

    helm(
        "upgrade", release, str(CHART), "-n", namespace, "--reuse-values",
        "--set", "router.autoscaling.enabled=true", "--set", "router.config.max_queue_per_model=64",
        "--set", "operator.replicas=3",
    )  # fmt: skip
    hpa = k.json("get", "hpa", f"{release}-flotilla-router")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{release}-flotilla-router"
    assert k.json("get", "deployment", f"{release}-flotilla-operator")["spec"]["replicas"] == 3
    config = k.json("get", "configmap", f"{release}-flotilla-router")["data"]["router.yaml"]
    assert yaml.safe_load(config)["max_queue_per_model"] == 64
    router = k.json("get", "deployment", f"{release}-flotilla-router")
    assert router["spec"]["template"]["metadata"]["annotations"] != old_checksum  # pods roll
    assert "2" in helm("history", release, "-n", namespace)
    # The generated NATS token survives the upgrade (the replicas would lose each other otherwise).
    assert k.json("get", "secret", f"{release}-flotilla-nats")["data"]["token"] == token

    helm("uninstall", release, "-n", namespace, "--wait")
    assert not k.json("get", "deployments,services,configmaps,serviceaccounts,hpa,secrets", "-l",
                      f"app.kubernetes.io/instance={release}")["items"]  # fmt: skip
    with pytest.raises(KubectlError, match="NotFound"):
        kubectl("get", "clusterrole", f"{release}-flotilla-operator")
    # CRDs stay (Helm never deletes them: that would delete every fleet).
    kubectl("get", "crd", "inferencefleets.flotilla.dev")


# (verb, resource, namespaced?) -> expected answer, per component. Namespaced checks run in the
# release namespace and in a namespace the component does not live in.
ALLOWED: dict[str, list[str]] = {
    "operator": [
        "get inferencefleets.flotilla.dev", "list inferencefleets.flotilla.dev",
        "watch inferencefleets.flotilla.dev", "patch inferencefleets.flotilla.dev/status",
        "update inferencefleets.flotilla.dev/finalizers",
        "create pods", "delete pods", "patch pods", "watch pods",
        "list nodes", "watch nodes", "create events", "create events.events.k8s.io",
        "list priorityclasses.scheduling.k8s.io", "watch customresourcedefinitions.apiextensions.k8s.io",
        "list namespaces",
    ],
    "placement": [
        "list nodes", "watch nodes", "list pods", "watch pods", "create pods/binding",
        "create pods/eviction", "create events", "patch pods/status",
    ],
    "router": [
        "list inferencefleets.flotilla.dev", "watch inferencefleets.flotilla.dev", "list pods", "watch pods",
    ],
}  # fmt: skip
FORBIDDEN: dict[str, list[str]] = {
    "operator": [
        "list secrets", "get secrets", "create deployments.apps", "delete nodes", "patch nodes",
        "create pods/binding", "create pods/eviction", "update inferencefleets.flotilla.dev",
        "delete inferencefleets.flotilla.dev", "create clusterroles.rbac.authorization.k8s.io",
        "create serviceaccounts/token",
    ],
    "placement": [
        "create pods", "delete pods", "patch pods", "update pods", "list secrets", "delete nodes",
        "patch inferencefleets.flotilla.dev", "list inferencefleets.flotilla.dev",
        "update leases.coordination.k8s.io",
        # The operator alone writes fleet status; placement explains on the pod (pods/status).
        "patch inferencefleets.flotilla.dev/status", "get inferencefleets.flotilla.dev/status",
    ],
    "router": [
        "create pods", "delete pods", "patch inferencefleets.flotilla.dev/status", "list secrets",
        "list nodes", "create events",
    ],
}  # fmt: skip


def can_i(kubectl: Kubectl, sa: str, check: str, namespace: str) -> bool:
    verb, resource = check.split()
    # kubectl reads "pods/binding" as the pod named binding: subresources go in --subresource.
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    argv = ["auth", "can-i", verb, resource, *extra, f"--as={sa}", f"--namespace={namespace}"]
    out = kubectl(*argv, check=False)
    return out.strip() == "yes"


def test_rbac_is_sufficient_and_minimal(helm: Helm, kubectl: Kubectl, namespace: str, release: str) -> None:
    helm("install", release, str(CHART), "-n", namespace)
    elsewhere = "default"
    wrong: list[str] = []
    for component in ("operator", "placement", "router"):
        sa = f"system:serviceaccount:{namespace}:{release}-flotilla-{component}"
        for check in ALLOWED[component]:
            for ns in (namespace, elsewhere):
                if not can_i(kubectl, sa, check, ns):
                    wrong.append(f"{component} cannot {check} in {ns}")
        for check in FORBIDDEN[component]:
            for ns in (namespace, elsewhere):
                if can_i(kubectl, sa, check, ns):
                    wrong.append(f"{component} can {check} in {ns}")
    # The operator's Lease: only in the release namespace.
    operator = f"system:serviceaccount:{namespace}:{release}-flotilla-operator"
    if not can_i(kubectl, operator, "update leases.coordination.k8s.io", namespace):
        wrong.append("operator cannot update its Lease")
    if can_i(kubectl, operator, "update leases.coordination.k8s.io", elsewhere):
        wrong.append("operator can update Leases outside its namespace")
    assert not wrong, "\n".join(wrong)
