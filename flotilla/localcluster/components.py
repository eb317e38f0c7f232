"""Command lines of the control-plane components (pure functions of the cluster's layout).

Flags follow what kubeadm gives each component, minus what a one-machine test cluster cannot use
(leader election, cloud providers, node CIDR allocation: KWOK nodes bring their own pod CIDR).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flotilla.localcluster.binaries import Binaries
from flotilla.localcluster.nodes import KWOK_MANAGE_SELECTOR

HOST = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
# Pods of nodes created without a pod CIDR still get loopback addresses (see nodes.py).
FALLBACK_POD_CIDR = "127.127.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
STAGES_FILE = Path(__file__).with_name("kwok_stages.yaml")


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int


@dataclass(frozen=True)
class Layout:
    """Every file and port of one cluster run (all files live under `run_dir`)."""

    run_dir: Path
    ports: Ports
    binaries: Binaries

    @property
    def pki(self) -> Path:
        return self.run_dir / "pki"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        return self.run_dir / "kubeconfigs" / f"{component}.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{HOST}:{self.ports.apiserver}"

    @property
    def etcd_url(self) -> str:
        return f"http://{HOST}:{self.ports.etcd_client}"


def etcd_argv(layout: Layout) -> list[str]:
    peer = f"http://{HOST}:{layout.ports.etcd_peer}"
    return [
        str(layout.binaries.etcd),
        "--name=local",
        f"--data-dir={layout.run_dir / 'etcd'}",
        f"--listen-client-urls={layout.etcd_url}",
        f"--advertise-client-urls={layout.etcd_url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
        # A throwaway cluster: durability is not worth an fsync per write on a shared disk.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_argv(layout: Layout) -> list[str]:
    pki = layout.pki
    return [
        str(layout.binaries.kube_apiserver),
        f"--etcd-servers={layout.etcd_url}",
        f"--bind-address={HOST}",
        f"--advertise-address={HOST}",
        f"--secure-port={layout.ports.apiserver}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=RBAC",
        # The aggregation layer's front proxy (kubeadm's set-up): without it every component's
        # delegated authentication logs a missing request-header CA bundle.
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        "--allow-privileged=true",
        # The `kubernetes` Service would point at 127.0.0.1, which Endpoints validation rejects.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
    ]


def controller_manager_argv(layout: Layout, node_monitor_grace_period_s: int) -> list[str]:
    kubeconfig = layout.component_kubeconfig("controller-manager")
    pki = layout.pki
    return [
        str(layout.binaries.kube_controller_manager),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={layout.ports.controller_manager}",
        f"--cert-dir={layout.run_dir / 'controller-manager'}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--cluster-name=flotilla-local",
        "--allocate-node-cidrs=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--node-monitor-grace-period={node_monitor_grace_period_s}s",
        "--profiling=false",
    ]


def scheduler_argv(layout: Layout) -> list[str]:
    kubeconfig = layout.component_kubeconfig("scheduler")
    return [
        str(layout.binaries.kube_scheduler),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={layout.ports.scheduler}",
        f"--cert-dir={layout.run_dir / 'scheduler'}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kwok_config(node_lease_duration_s: int) -> list[dict[str, Any]]:
    """KWOK's configuration document followed by the committed stages (kwok_stages.yaml)."""
    options = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {
            "cidr": FALLBACK_POD_CIDR,
            "nodeIP": HOST,
            "manageAllNodes": False,
            "manageNodesWithAnnotationSelector": KWOK_MANAGE_SELECTOR,
            "nodeLeaseDurationSeconds": node_lease_duration_s,
        },
    }
    stages = [doc for doc in yaml.safe_load_all(STAGES_FILE.read_text()) if doc]
    return [options, *stages]


def kwok_argv(layout: Layout, config_file: Path) -> list[str]:
    return [
        str(layout.binaries.kwok),
        f"--kubeconfig={layout.component_kubeconfig('kwok')}",
        f"--config={config_file}",
        f"--server-address={HOST}:{layout.ports.kwok}",
    ]
