"""The pod data path without a cluster: an engine bound to a 127.x "pod IP" answers there, is
replaced when a new pod gets the same address, and is gone after `stop`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from flotilla.localcluster.engines import EngineLaunch, EngineLauncher
from flotilla.localcluster.podendpoint import PodEndpoint
from flotilla.localcluster.ports import free_port
from flotilla.localcluster.process import ProcessFailed

pytestmark = pytest.mark.slow


def endpoint(uid: str, ip: str, port: int, model: str = "tiny") -> PodEndpoint:
    return PodEndpoint(namespace="ns", name="pod", uid=uid, ip=ip, port=port, model=model)


async def test_engine_serves_completions_at_the_pod_ip_and_stops(tmp_path: Path) -> None:
    ip = "127.128.200.7"
    port = free_port(ip)
    async with EngineLauncher(tmp_path) as launcher:
        first = await launcher.start(endpoint("uid-1", ip, port))
        assert await launcher.start(endpoint("uid-1", ip, port)) is first  # idempotent per pod
        async with httpx.AsyncClient(base_url=f"http://{ip}:{port}", trust_env=False, timeout=30) as client:
            response = await client.post(
                "/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 4}
            )
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["text"]
            # Nothing listens on the same port of another loopback address: the pod IP is the address.
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.128.200.8:{port}/health")

        # KWOK recycles the IP of a deleted pod: the new pod's engine replaces the old one.
        second = await launcher.start(endpoint("uid-2", ip, port, model="other"))
        assert not first.process.running()
        assert launcher.running_keys() == {"ns/pod/uid-2"}
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            models = (await client.get(f"http://{ip}:{port}/v1/models")).json()
            assert [m["id"] for m in models["data"]] == ["other"]
        await launcher.stop("ns/pod/uid-2")
        assert not second.process.running()
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://{ip}:{port}/health")


class FailingEngine:
    """An engine command whose process exits at once, as one without its accelerator would."""

    ready_timeout_s = 30.0

    def __call__(self, endpoint: PodEndpoint) -> EngineLaunch:
        return EngineLaunch(["python3", "-c", "raise SystemExit('no GPU here')"])


async def test_engine_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    launcher = EngineLauncher(tmp_path, command=FailingEngine())
    with pytest.raises(ProcessFailed, match="no GPU here"):
        await launcher.start(endpoint("uid-3", "127.128.200.9", 8000))
    assert launcher.engines == {}
