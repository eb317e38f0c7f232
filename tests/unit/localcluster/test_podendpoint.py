from typing import Any

from flotilla.localcluster.podendpoint import endpoint_from_pod, wants_engine


def pod(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {}},
        "spec": {"containers": [{"name": "engine", "ports": [{"name": "http", "containerPort": 8001}]}]},
        "status": {"phase": "Running", "podIP": "127.128.0.3"},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value}
    return base


def test_endpoint_reads_ip_named_port_and_model_label() -> None:
    endpoint = endpoint_from_pod(pod(metadata={"labels": {"flotilla.dev/model": "llama"}}))
    assert endpoint is not None
    assert (endpoint.ip, endpoint.port, endpoint.model) == ("127.128.0.3", 8001, "llama")
    assert endpoint.key == "ns/p/u-1"
    assert endpoint.url == "http://127.128.0.3:8001"


def test_model_falls_back_to_served_model_name_then_model_flag_then_pod_name() -> None:
    args = ["serve", "--model", "m-big", "--served-model-name=m-served"]
    spec = {"containers": [{"name": "engine", "args": args, "ports": [{"containerPort": 9000}]}]}
    endpoint = endpoint_from_pod(pod(spec=spec))
    assert endpoint is not None and (endpoint.model, endpoint.port) == ("m-served", 9000)
    spec = {"containers": [{"name": "other", "command": ["vllm", "--model", "m-big"]}]}
    endpoint = endpoint_from_pod(pod(spec=spec))
    assert endpoint is not None and (endpoint.model, endpoint.port) == ("m-big", 8000)
    endpoint = endpoint_from_pod(pod(spec={"containers": [{"name": "x"}]}))
    assert endpoint is not None and endpoint.model == "p"


def test_no_engine_without_ip_when_terminating_or_finished() -> None:
    assert wants_engine(pod(status={"phase": "Pending"})) is True
    assert endpoint_from_pod(pod(status={"podIP": None})) is None
    assert endpoint_from_pod(pod(metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"})) is None
    assert endpoint_from_pod(pod(status={"phase": "Failed"})) is None
    assert endpoint_from_pod(pod(status={"phase": "Succeeded"})) is None
