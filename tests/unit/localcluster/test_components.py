from pathlib import Path

from flotilla.localcluster.binaries import Binaries
from flotilla.localcluster.components import (
    FALLBACK_POD_CIDR,
    Layout,
    Ports,
    apiserver_argv,
    controller_manager_argv,
    kwok_argv,
    kwok_config,
)

BIN = Binaries(
    *(Path(f"/bin/{n}") for n in ("etcd", "api", "kcm", "sched", "kubectl", "kwok", "helm", "nats"))
)
LAYOUT = Layout(run_dir=Path("/run/c"), ports=Ports(1, 2, 3, 4, 5, 6), binaries=BIN)


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv[1:])


def test_apiserver_uses_client_certificates_rbac_and_local_service_account_keys() -> None:
    f = flags(apiserver_argv(LAYOUT))
    assert f["authorization-mode"] == "RBAC"
    assert f["client-ca-file"] == "/run/c/pki/ca.crt"
    assert f["service-account-signing-key-file"] == "/run/c/pki/sa.key"
    assert f["service-account-key-file"] == "/run/c/pki/sa.pub"
    assert (f["bind-address"], f["secure-port"], f["etcd-servers"]) == (
        "127.0.0.1",
        "3",
        "http://127.0.0.1:1",
    )


def test_controller_manager_signs_tokens_and_uses_per_controller_credentials() -> None:
    f = flags(controller_manager_argv(LAYOUT, node_monitor_grace_period_s=17))
    assert f["use-service-account-credentials"] == "true"
    assert f["service-account-private-key-file"] == "/run/c/pki/sa.key"
    assert f["node-monitor-grace-period"] == "17s"
    assert f["kubeconfig"] == "/run/c/kubeconfigs/controller-manager.kubeconfig"


def test_kwok_config_manages_annotated_nodes_with_loopback_pod_ips_and_committed_stages() -> None:
    options, *stages = kwok_config(node_lease_duration_s=40)
    assert options["kind"] == "KwokConfiguration"
    opts = options["options"]
    assert opts["manageAllNodes"] is False
    assert opts["manageNodesWithAnnotationSelector"] == "kwok.x-k8s.io/node=fake"
    assert opts["cidr"] == FALLBACK_POD_CIDR and opts["cidr"].startswith("127.")
    names = {s["metadata"]["name"] for s in stages}
    assert {"node-initialize", "node-heartbeat-with-lease", "pod-create", "pod-ready", "pod-delete"} <= names
    assert all(s["kind"] == "Stage" for s in stages)
    assert flags(kwok_argv(LAYOUT, Path("/run/c/kwok.yaml")))["config"] == "/run/c/kwok.yaml"


def test_pod_stages_have_no_default_delay() -> None:
    _, *stages = kwok_config(node_lease_duration_s=40)
    for stage in stages:
        if stage["spec"]["resourceRef"]["kind"] == "Pod":
            delay = stage["spec"].get("delay", {})
            assert delay.get("durationMilliseconds", 0) == 0, stage["metadata"]["name"]
            assert "jitterDurationMilliseconds" not in delay, stage["metadata"]["name"]
