"""Smoke test of the local control plane: the API answers, GPU nodes are Ready, the real
kube-scheduler places a pod on a KWOK node, and an engine serves at that pod's own IP."""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any

import httpx
import pytest

from flotilla.localcluster.binaries import find_repo_root
from flotilla.localcluster.controlplane import LocalCluster
from flotilla.localcluster.engines import EngineLauncher
from flotilla.localcluster.kubectl import Kubectl
from flotilla.localcluster.nodes import KWOK_TOLERATION, POD_NETWORK
from flotilla.localcluster.podendpoint import endpoint_from_pod
from flotilla.localcluster.readiness import wait_until

pytestmark = pytest.mark.e2e

MODEL = "smoke-model"


def pinned_kubernetes_version() -> str:
    env = (find_repo_root() / "e2e/controlplane/versions.env").read_text()
    return next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("KUBERNETES_VERSION="))


async def test_api_server_answers_readyz_and_reports_the_pinned_version(cluster: LocalCluster) -> None:
    async with httpx.AsyncClient(verify=cluster.admin_ssl_context(), trust_env=False) as client:
        readyz = await client.get(f"{cluster.server}/readyz")
        version = await client.get(f"{cluster.server}/version")
    trust_ca_only = ssl.create_default_context(cafile=str(cluster.layout.pki / "ca.crt"))
    async with httpx.AsyncClient(verify=trust_ca_only, trust_env=False) as client:
        anonymous = await client.get(f"{cluster.server}/api/v1/nodes")
    assert (readyz.status_code, readyz.text) == (200, "ok")
    assert version.json()["gitVersion"] == pinned_kubernetes_version()
    # Authentication is real: an anonymous request is refused.
    assert anonymous.status_code in (401, 403)


def test_nodes_are_ready_with_8_gpus_each(kubectl: Kubectl) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    defaults = [f"gpu-node-{i}" for i in range(4)]
    assert set(defaults) <= set(nodes)
    for name in defaults:
        node = nodes[name]
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", name
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
        labels = node["metadata"]["labels"]
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert labels["kubernetes.io/hostname"] == name
        assert labels["topology.kubernetes.io/zone"] in ("zone-a", "zone-b")
        assert {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"} in node["spec"][
            "taints"
        ]
        assert ipaddress.ip_network(node["spec"]["podCIDR"]).subnet_of(POD_NETWORK)
    zones = {nodes[n]["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in defaults}
    assert zones == {"zone-a", "zone-b"}


def engine_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "smoke", "flotilla.dev/model": MODEL}},
        "spec": {
            "tolerations": [KWOK_TOLERATION],
            "containers": [
                {
                    "name": "engine",
                    "image": "vllm/vllm-openai:latest",
                    "args": ["--model", MODEL],
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


async def test_kube_scheduler_places_a_pod_and_an_engine_answers_at_its_ip(
    kube_scheduler: LocalCluster, namespace: str, api: Any, engine_launcher: EngineLauncher
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    core = CoreV1Api(api)
    await core.create_namespaced_pod(namespace, body=engine_pod("smoke"))

    pod: dict[str, Any] = {}

    async def running() -> bool:
        nonlocal pod
        pod = api.sanitize_for_serialization(await core.read_namespaced_pod("smoke", namespace))
        return pod["status"].get("phase") == "Running" and bool(pod["status"].get("podIP"))

    await wait_until(running, timeout_s=30, what="pod smoke Running with an IP")

    # Bound by the real default scheduler (not by KWOK or by us).
    events = await core.list_namespaced_event(namespace, field_selector="involvedObject.name=smoke")
    scheduled = [e for e in events.items if e.reason == "Scheduled"]
    assert scheduled, [e.reason for e in events.items]
    assert scheduled[0].reporting_component == "default-scheduler"
    node_name = pod["spec"]["nodeName"]
    node = await core.read_node(node_name)
    assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
    # KWOK took the pod IP from the node's own loopback pod CIDR.
    ip = ipaddress.ip_address(pod["status"]["podIP"])
    assert ip.is_loopback
    assert ip in ipaddress.ip_network(node.spec.pod_cidr)

    endpoint = endpoint_from_pod(pod)
    assert endpoint is not None
    assert (endpoint.ip, endpoint.port, endpoint.model) == (str(ip), 8000, MODEL)
    await engine_launcher.start(endpoint)

    async with httpx.AsyncClient(base_url=f"http://{ip}:8000", trust_env=False, timeout=30) as client:
        models = (await client.get("/v1/models")).json()
        response = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8}
        )
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["model"] == MODEL
    assert body["choices"][0]["text"]
    assert 1 <= body["usage"]["completion_tokens"] <= 8
