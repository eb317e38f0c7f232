"""Where a pod's engine should listen, read from the pod object (pure; no I/O).

KWOK gives a pod a 127.x address (see nodes.py); a real kubelet would start the container there.
We read the same things a kubelet and a router would: the pod IP, the engine container's port,
and the served model name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flotilla.api.labels import ENGINE_CONTAINER_NAME, ENGINE_PORT, ENGINE_PORT_NAME, LABEL_MODEL

MODEL_FLAGS = ("--served-model-name", "--model")


@dataclass(frozen=True)
class PodEndpoint:
    """One pod's engine address. `key` changes when a pod is replaced under the same name."""

    namespace: str
    name: str
    uid: str
    ip: str
    port: int
    model: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    """The engine container's command and args as rendered by the operator (vLLM's flags)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}/{self.uid}"

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


def _engine_container(containers: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for container in containers:
        if container.get("name") == ENGINE_CONTAINER_NAME:
            return container
    return containers[0] if containers else None


def _port(container: Mapping[str, Any] | None) -> int:
    ports = (container or {}).get("ports") or []
    for port in ports:
        if port.get("name") == ENGINE_PORT_NAME:
            return int(port["containerPort"])
    return int(ports[0]["containerPort"]) if ports else ENGINE_PORT


def _argv(container: Mapping[str, Any] | None) -> list[str]:
    container = container or {}
    return [str(a) for a in (*(container.get("command") or []), *(container.get("args") or []))]


def _model(pod: Mapping[str, Any], container: Mapping[str, Any] | None) -> str:
    labels = pod["metadata"].get("labels") or {}
    if LABEL_MODEL in labels:
        return str(labels[LABEL_MODEL])
    args = _argv(container)
    for flag in MODEL_FLAGS:
        for i, arg in enumerate(args):
            if arg == flag and i + 1 < len(args):
                return str(args[i + 1])
            if arg.startswith(flag + "="):
                return str(arg.split("=", 1)[1])
    return str(pod["metadata"]["name"])


def wants_engine(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's container would be running: it has an IP, is not terminating or done."""
    status = pod.get("status") or {}
    return (
        bool(status.get("podIP"))
        and not pod["metadata"].get("deletionTimestamp")
        and status.get("phase") in ("Pending", "Running")
    )


def endpoint_from_pod(pod: Mapping[str, Any]) -> PodEndpoint | None:
    """The engine endpoint of a pod (a dict in API JSON form), or None if it should not run one."""
    if not wants_engine(pod):
        return None
    meta = pod["metadata"]
    container = _engine_container((pod.get("spec") or {}).get("containers") or [])
    return PodEndpoint(
        namespace=str(meta.get("namespace", "default")),
        name=str(meta["name"]),
        uid=str(meta.get("uid", "")),
        ip=str(pod["status"]["podIP"]),
        port=_port(container),
        model=_model(pod, container),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        args=tuple(_argv(container)),
    )
