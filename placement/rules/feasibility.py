"""Kubernetes' hard filters, shared by every policy: taints and tolerations, node selectors, readiness.

Resource fit and spread depend on what else is placed, so they live in `clusterstate`; what is here
depends only on the pod and the node, which is why the solver can precompute it per pod and node class.
"""

from __future__ import annotations

from flotilla.placement.types.snapshot import Node, Pod, Taint, Toleration

BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.operator == "Exists":
        return toleration.key in ("", taint.key)
    return toleration.key == taint.key and toleration.value == taint.value


def taints_tolerated(pod: Pod, node: Node) -> bool:
    return all(
        any(tolerates(t, taint) for t in pod.tolerations)
        for taint in node.taints
        if taint.effect in BLOCKING_EFFECTS
    )


def selector_matches(pod: Pod, node: Node) -> bool:
    return all(node.label(key) == value for key, value in pod.node_selector)


def eligible(pod: Pod, node: Node) -> bool:
    """The filters that do not depend on other pods: readiness, taints, node selector, size alone."""
    return (
        node.ready
        and pod.demand.fits_in(node.allocatable)
        and taints_tolerated(pod, node)
        and selector_matches(pod, node)
    )
