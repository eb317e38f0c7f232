"""Kubernetes credentials: an explicit kubeconfig wins, then in-cluster, then the default kubeconfig.

Each case writes real files and checks the Configuration kubernetes_asyncio would connect with, and
that the process-wide default Configuration is never touched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import incluster_config, kube_config

from flotilla.kube.config import load_configuration


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "secret"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


@pytest.fixture
def default_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """~/.kube/config stand-in, and no in-cluster environment unless a test sets one."""
    path = write_kubeconfig(tmp_path / "default-kubeconfig", "https://127.0.0.1:7001")
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    return path


async def test_an_explicit_kubeconfig_is_used(tmp_path: Path, default_kubeconfig: Path) -> None:
    given = write_kubeconfig(tmp_path / "given", "https://127.0.0.1:7002")
    default_host = Configuration.get_default_copy().host
    for kubeconfig in (given, str(given)):
        cfg = await load_configuration(kubeconfig)
        assert cfg.host == "https://127.0.0.1:7002"
        assert cfg.api_key["BearerToken"] == "Bearer secret"
    assert Configuration.get_default_copy().host == default_host, "the global default is untouched"


async def test_in_cluster_credentials_come_before_the_default_kubeconfig(
    tmp_path: Path, default_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, cert = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "7003")
    cfg = await load_configuration()
    assert cfg.host == "https://127.0.0.1:7003"
    assert cfg.api_key["BearerToken"] == "Bearer sa-token"
    assert cfg.ssl_ca_cert == str(cert)


async def test_outside_a_cluster_the_default_kubeconfig_is_used(default_kubeconfig: Path) -> None:
    cfg = await load_configuration(None)
    assert cfg.host == "https://127.0.0.1:7001"
    cfg_again = await load_configuration(None)
    assert cfg_again is not cfg, "a Configuration of its own per call"
