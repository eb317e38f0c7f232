"""`flotilla cluster up|status|down`: a detached cluster outlives the command and is ended by pid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.process import pid_alive

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FLOTILLA = str(Path(sys.executable).parent / "flotilla")


def flotilla(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLOTILLA, *args], capture_output=True, text=True, timeout=180, check=False)


def test_cluster_up_status_down(cluster: LocalCluster, tmp_path: Path) -> None:
    # `cluster` only provides the binaries (or the skip); this test runs a second cluster.
    run_dir = tmp_path / "cli-cluster"
    where = ["--name", "e2e-cli", "--run-dir", str(run_dir)]
    up = flotilla("cluster", "up", *where, "--nodes", "1", "--gpus", "4", "--no-scheduler")
    assert up.returncode == 0, up.stderr
    assert f"export KUBECONFIG={run_dir / 'kubeconfig'}" in up.stdout
    state = json.loads((run_dir / "state.json").read_text())
    try:
        assert set(state["processes"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kwok"}
        for proc in state["processes"].values():  # the command has exited; the cluster runs on
            assert pid_alive(proc["pid"], proc["start_time"])
        status = flotilla("cluster", "status", *where)
        assert status.returncode == 0, status.stdout + status.stderr
        kubectl = [str(cluster.binaries.kubectl), f"--kubeconfig={run_dir / 'kubeconfig'}"]
        nodes = json.loads(subprocess.check_output([*kubectl, "get", "nodes", "-o", "json"], timeout=30))
        assert [n["status"]["allocatable"]["nvidia.com/gpu"] for n in nodes["items"]] == ["4"]
        again = flotilla("cluster", "up", *where)
        assert again.returncode == 1 and "already runs" in again.stderr
    finally:
        down = flotilla("cluster", "down", *where)
    assert down.returncode == 0, down.stderr
    assert not run_dir.exists()
    for proc in state["processes"].values():
        assert not pid_alive(proc["pid"], proc["start_time"])
    assert flotilla("cluster", "status", *where).returncode == 1
