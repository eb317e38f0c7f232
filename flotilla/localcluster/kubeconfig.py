"""Kubeconfig files: one per identity, all pointing at the local API server by client certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flotilla.localcluster.pki import CertPair


def render_kubeconfig(
    *, cluster_name: str, server: str, ca_file: Path, user: str, client: CertPair
) -> dict[str, Any]:
    """A kubeconfig document with one cluster, one user and one current context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(client.cert),
                    "client-key": str(client.key),
                },
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
        "preferences": {},
    }


def write_kubeconfig(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path
