"""Render the chart with the pinned helm binary (built by e2e/controlplane/build.sh)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from flotilla.localcluster.binaries import BinariesMissing, find_repo_root, locate_binaries

KUBE_VERSION = "1.35.0"


@pytest.fixture(scope="session")
def repo() -> Path:
    return find_repo_root(Path(__file__).resolve())


@pytest.fixture(scope="session")
def chart(repo: Path) -> Path:
    return repo / "helm" / "flotilla"


@pytest.fixture(scope="session")
def helm(repo: Path) -> Path:
    try:
        binary = locate_binaries(repo).helm
    except BinariesMissing as exc:
        pytest.skip(str(exc))
    if not binary.exists():
        pytest.skip(f"helm is not built ({binary}): run `make binaries`")
    return binary


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: Path, chart: Path) -> Render:
    """`render("--set", "router.autoscaling.enabled=true")` -> the manifests, as dicts."""

    def run(*args: str, api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        argv = [str(helm), "template", "demo", str(chart), "-n", "flotilla-system"]
        argv += ["--kube-version", KUBE_VERSION, *(f"--api-versions={v}" for v in api_versions), *args]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    return run
