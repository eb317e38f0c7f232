"""Start-up failures of the control plane are retried when they are port races and otherwise
reported with the failing component's log."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from flotilla.localcluster import components, controlplane
from flotilla.localcluster.controlplane import ClusterConfig, LocalCluster
from flotilla.localcluster.ports import free_ports
from flotilla.localcluster.process import ProcessFailed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BARE = ClusterConfig(name="start-test", gpu_nodes=0, scheduler=False, start_timeout_s=60)


def test_a_port_taken_before_etcd_binds_it_is_retried_on_new_ports(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    picks: list[list[int]] = []

    def first_pick_busy(count: int, host: str = "127.0.0.1") -> list[int]:
        ports = free_ports(count, host)
        picks.append([busy, *ports[1:]] if not picks else ports)
        return picks[-1]

    monkeypatch.setattr(controlplane, "free_ports", first_pick_busy)
    local = LocalCluster(BARE, tmp_path / "run", cluster.binaries)
    try:
        asyncio.run(local.start())
        assert len(picks) == 2
        assert local.layout.ports.etcd_client != busy
        assert local.failed_components() == []
    finally:
        asyncio.run(local.stop())
        taken.close()


def test_a_component_that_fails_is_named_with_its_log_and_nothing_is_left_running(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = components.apiserver_argv
    monkeypatch.setattr(components, "apiserver_argv", lambda layout: [*original(layout), "--no-such-flag"])
    local = LocalCluster(BARE, tmp_path / "run", cluster.binaries)
    with pytest.raises(ProcessFailed) as info:
        asyncio.run(local.start())
    message = str(info.value)
    assert message.startswith("kube-apiserver: exited while waiting for GET https://127.0.0.1:")
    assert "unknown flag: --no-such-flag" in message
    assert str(tmp_path / "run" / "logs" / "kube-apiserver.log") in message
    assert all(not p.running() for p in local.processes.values())
