"""Where the control-plane binaries are, and building them when asked.

`e2e/controlplane/build.sh` is the one source of truth for versions and cache paths; this module
asks it (`build.sh --print`) rather than repeating them. The binaries live outside the repository,
in ${FLOTILLA_CACHE:-~/.cache/flotilla}/bin/<name>-<version>/.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path("e2e/controlplane/build.sh")


class BinariesMissing(RuntimeError):
    """The control-plane binaries are not built (run `make binaries`)."""


def find_repo_root(start: Path | None = None) -> Path:
    """The checkout that holds build.sh: from $FLOTILLA_REPO, the working directory or this file."""
    candidates = []
    if env := os.environ.get("FLOTILLA_REPO"):
        candidates.append(Path(env))
    candidates += [start or Path.cwd(), Path(__file__).resolve()]
    for candidate in candidates:
        for directory in (candidate, *candidate.parents):
            if (directory / BUILD_SCRIPT).is_file():
                return directory
    raise BinariesMissing(f"cannot find {BUILD_SCRIPT}: run from the flotilla checkout or set FLOTILLA_REPO")


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every executable the local cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    helm: Path
    nats_server: Path
    """The router replicas' shared state (not part of the control plane: the tests start it)."""

    def missing(self) -> list[Path]:
        return [p for p in vars(self).values() if not os.access(p, os.X_OK)]


def _cache_dirs(repo: Path) -> dict[str, Path]:
    out = subprocess.run(
        ["bash", str(repo / BUILD_SCRIPT), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {k: Path(v) for k, v in (line.split("=", 1) for line in out.splitlines() if "=" in line)}


def locate_binaries(repo: Path | None = None) -> Binaries:
    """The pinned binaries' paths (they may not exist yet: see `Binaries.missing`)."""
    dirs = _cache_dirs(repo or find_repo_root())
    k8s = dirs["kubernetes"]
    return Binaries(
        etcd=dirs["etcd"] / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=k8s / "kubectl",
        kwok=dirs["kwok"] / "kwok",
        helm=dirs["helm"] / "helm",
        nats_server=dirs["nats"] / "nats-server",
    )


def build_binaries(repo: Path | None = None) -> None:
    """Run build.sh (cold: tens of minutes; warm: seconds). Its output goes to the terminal."""
    root = repo or find_repo_root()
    subprocess.run(["bash", str(root / BUILD_SCRIPT)], check=True)


def ensure_binaries(*, build: bool, repo: Path | None = None) -> Binaries:
    """The binaries, built first if `build` and some are missing; `BinariesMissing` otherwise."""
    root = repo or find_repo_root()
    binaries = locate_binaries(root)
    if binaries.missing() and build:
        build_binaries(root)
        binaries = locate_binaries(root)
    if missing := binaries.missing():
        names = ", ".join(p.name for p in missing)
        raise BinariesMissing(f"control-plane binaries missing ({names}): run `make binaries`")
    return binaries
