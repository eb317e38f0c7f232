"""Where a process's Kubernetes credentials come from: a kubeconfig file, in-cluster, or ~/.kube.

The operator, the placement loop and the router's discovery all connect the same way, so the rule
lives here once. Each call fills a Configuration of its own rather than kubernetes_asyncio's default
one (a process-wide global), so two clients in one process never share or overwrite credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


async def load_configuration(kubeconfig: str | Path | None = None) -> Any:
    """A kubernetes_asyncio Configuration: from `kubeconfig` when given, else in-cluster, else ~/.kube."""
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import Configuration

    cfg = Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        return cfg
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config(client_configuration=cfg)
    return cfg
