"""Kubernetes objects (as the API's JSON: camelCase dicts) to the solver's snapshot, purely.

The in-cluster loop lists nodes and pods and hands the JSON here; keeping the conversion pure means
every rule about what the solver sees (which pods are pending for us, what a pod requests, which
pods flotilla may evict, what tier and gang a pod belongs to) is unit-tested without a cluster.
The pod metadata contract is flotilla.api.labels, written by the operator.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from flotilla.api import labels as api
from flotilla.placement.types.snapshot import (
    HOSTNAME_KEY,
    Node,
    Pack,
    Pod,
    Resources,
    Snapshot,
    Spread,
    SpreadMode,
    Taint,
    Toleration,
)

Json = Mapping[str, Any]

_SUFFIXES = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "K": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|K|M|G|T|P|E)?$")


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes resource quantity ("500m", "16Gi", "2", 8) as a number."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.groups()
    if suffix in ("E", "e") and "e" in number.lower():
        raise ValueError(f"ambiguous quantity: {value!r}")
    return Decimal(number) * _SUFFIXES[suffix or ""]


def resources_of(values: Json) -> Resources:
    """Requests or allocatable: GPUs, CPU millicores and memory MiB rounded up, pod slots."""
    cpu = parse_quantity(values.get("cpu", 0)) * 1000
    mem = parse_quantity(values.get("memory", 0)) / (2**20)
    return Resources(
        gpu=int(parse_quantity(values.get(api.GPU_RESOURCE, 0))),
        cpu_m=int(cpu.to_integral_value(rounding="ROUND_CEILING")),
        mem_mi=int(mem.to_integral_value(rounding="ROUND_CEILING")),
        pods=int(parse_quantity(values.get("pods", 0))),
    )


def pod_requests(pod: Json) -> Resources:
    """Sum of the containers' requests (limits stand in for missing requests, as the API defaults)."""
    total = Resources()
    for container in pod.get("spec", {}).get("containers", []):
        res = container.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        total = total + resources_of(merged)
    return total


def pod_key(pod: Json) -> str:
    meta = pod.get("metadata", {})
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


def _tier(pod: Json) -> int:
    value = (pod.get("metadata", {}).get("labels") or {}).get(api.LABEL_TIER)
    if value is not None:
        try:
            return int(value)
        except ValueError:
            pass
    return int(pod.get("spec", {}).get("priority") or 0)


def _spread(annotations: Json) -> Spread | None:
    if annotations.get(api.ANNOTATION_PLACEMENT) != "spread":
        return None
    mode = SpreadMode.HARD if annotations.get(api.ANNOTATION_PLACEMENT_MODE) == "hard" else SpreadMode.SOFT
    return Spread(mode, annotations.get(api.ANNOTATION_TOPOLOGY_KEY) or HOSTNAME_KEY, 1)


def _pack(annotations: Json) -> Pack | None:
    """The CRD's default strategy is pack, but only pods that say so (the operator always does) get it."""
    if annotations.get(api.ANNOTATION_PLACEMENT) != "pack":
        return None
    mode = SpreadMode.HARD if annotations.get(api.ANNOTATION_PLACEMENT_MODE) == "hard" else SpreadMode.SOFT
    return Pack(mode, annotations.get(api.ANNOTATION_TOPOLOGY_KEY) or HOSTNAME_KEY)


def to_pod(pod: Json) -> Pod:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    gang = annotations.get(api.ANNOTATION_GANG)
    namespace = meta.get("namespace", "default")
    return Pod(
        name=pod_key(pod),
        requests=pod_requests(pod),
        tier=_tier(pod),
        fleet=f"{namespace}/{labels[api.LABEL_FLEET]}" if api.LABEL_FLEET in labels else "",
        node=spec.get("nodeName") or None,
        managed=labels.get(api.LABEL_MANAGED_BY) == api.MANAGED_BY and api.LABEL_FLEET in labels,
        gang=f"{namespace}/{gang}" if gang else None,
        gang_size=int(annotations.get(api.ANNOTATION_GANG_SIZE, 1)) if gang else 1,
        tolerations=tuple(
            Toleration(
                key=t.get("key") or "",
                operator=t.get("operator") or "Equal",
                value=t.get("value") or "",
                effect=t.get("effect") or "",
            )
            for t in spec.get("tolerations") or []
        ),
        node_selector=tuple(sorted((spec.get("nodeSelector") or {}).items())),
        spread=_spread(annotations),
        pack=_pack(annotations),
    )


def to_node(node: Json) -> Node:
    meta = node.get("metadata", {})
    spec = node.get("spec", {})
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return Node(
        name=meta["name"],
        allocatable=resources_of(node.get("status", {}).get("allocatable") or {}),
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        taints=tuple(
            Taint(t["key"], t.get("value") or "", t.get("effect") or "NoSchedule")
            for t in spec.get("taints") or []
        ),
        ready=ready and not spec.get("unschedulable", False),
    )


def is_pending_for_us(pod: Json, scheduler_name: str = api.SCHEDULER_NAME) -> bool:
    spec, status, meta = pod.get("spec", {}), pod.get("status", {}), pod.get("metadata", {})
    return (
        spec.get("schedulerName") == scheduler_name
        and not spec.get("nodeName")
        and status.get("phase", "Pending") == "Pending"
        and not meta.get("deletionTimestamp")
    )


def occupies_node(pod: Json) -> bool:
    """Bound and not finished: it holds its node's resources (terminating pods still do)."""
    return bool(pod.get("spec", {}).get("nodeName")) and pod.get("status", {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )


def build_snapshot(
    nodes: Iterable[Json], pods: Iterable[Json], scheduler_name: str = api.SCHEDULER_NAME
) -> Snapshot:
    """The solver's view: every node, every pod holding resources (any scheduler), our pending pods.

    Terminating pods still hold their node but may not be evicted again, so they count as unmanaged.
    """
    bound: list[Pod] = []
    pending: list[Pod] = []
    for pod in pods:
        if occupies_node(pod):
            converted = to_pod(pod)
            if pod.get("metadata", {}).get("deletionTimestamp"):
                converted = replace(converted, managed=False)
            bound.append(converted)
        elif is_pending_for_us(pod, scheduler_name):
            pending.append(to_pod(pod))
    return Snapshot(nodes=tuple(to_node(n) for n in nodes), bound=tuple(bound), pending=tuple(pending))
