"""Why a pod was left pending, in words an operator can act on (for Events and fleet conditions)."""

from __future__ import annotations

from flotilla.placement.rules.feasibility import selector_matches, taints_tolerated
from flotilla.placement.types.snapshot import Pod, Snapshot


def explain_unplaced(snapshot: Snapshot, pod: Pod) -> str:
    """kube-scheduler style: how many nodes each filter ruled out, or that capacity went to others."""
    total = len(snapshot.nodes)
    not_ready = sum(1 for n in snapshot.nodes if not n.ready)
    selector = sum(1 for n in snapshot.nodes if n.ready and not selector_matches(pod, n))
    taints = sum(
        1 for n in snapshot.nodes if n.ready and selector_matches(pod, n) and not taints_tolerated(pod, n)
    )
    too_small = sum(
        1
        for n in snapshot.nodes
        if n.ready
        and selector_matches(pod, n)
        and taints_tolerated(pod, n)
        and not pod.demand.fits_in(n.allocatable)
    )
    candidates = total - not_ready - selector - taints - too_small
    reasons = [
        f"{count} {what}"
        for count, what in (
            (not_ready, "not ready"),
            (selector, "not matching the node selector"),
            (taints, "with untolerated taints"),
            (too_small, f"too small for {pod.requests.gpu} GPUs"),
        )
        if count
    ]
    head = f"0/{total} nodes can take it: " if candidates == 0 else f"{candidates}/{total} nodes match"
    if candidates == 0:
        return head + ", ".join(reasons) + "."
    gang = f" (gang of {pod.gang_size}, all or none)" if pod.gang else ""
    return (
        f"{head}, but their free capacity went to pods of tier >= {pod.tier} or could not be freed "
        f"without evicting pods of the same or a higher tier{gang}."
    )
