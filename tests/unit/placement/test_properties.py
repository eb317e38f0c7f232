"""Property tests: every policy's plans are valid, and the solver is optimal where it says so.

Random small clusters (taints, selectors, gangs, spread, running pods of several tiers) are checked
against the hard rules; for tiny ones without running pods, a brute force over every assignment gives
the true lexicographic optimum that an OPTIMAL plan must reach.
"""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flotilla.placement.examples import gpu_node, hard_pack, hard_spread, soft_pack, soft_spread, tp_pod
from flotilla.placement.heuristics.bestfit import schedule_best_fit
from flotilla.placement.heuristics.kubedefault import schedule_default
from flotilla.placement.rules.clusterstate import ClusterState
from flotilla.placement.rules.metrics import evaluate, lex_key, violations
from flotilla.placement.types.plan import Status
from flotilla.placement.types.snapshot import Pack, Pod, Snapshot, Spread, Taint, Toleration

TAINT = Taint("dedicated", "x", "NoSchedule")
TOLERATE = Toleration("dedicated", "Equal", "x", "NoSchedule")


@st.composite
def snapshots(draw: st.DrawFn, max_nodes: int = 4, max_pods: int = 8, allow_bound: bool = True) -> Snapshot:
    n_nodes = draw(st.integers(1, max_nodes))
    nodes = tuple(
        gpu_node(
            f"n{i}",
            draw(st.sampled_from([2, 4, 8])),
            labels=(("gpu", draw(st.sampled_from(["A", "B"]))),),
            taints=(TAINT,) if draw(st.booleans()) and i > 0 else (),
        )
        for i in range(n_nodes)
    )
    pods: list[Pod] = []
    for f in range(draw(st.integers(0, max_pods))):
        tp = draw(st.sampled_from([1, 2, 4, 8]))
        tier = draw(st.integers(0, 2))
        gang_size = draw(st.sampled_from([1, 1, 1, 2]))
        selector = (("gpu", "A"),) if draw(st.integers(0, 4)) == 0 else ()
        tolerations = (TOLERATE,) if draw(st.booleans()) else ()
        placement = draw(
            st.sampled_from([None, None, hard_spread(), soft_spread(), hard_pack(), soft_pack()])
        )
        spread = placement if isinstance(placement, Spread) else None
        pack = placement if isinstance(placement, Pack) else None
        for m in range(gang_size):
            pods.append(
                tp_pod(
                    f"p{f}-{m}",
                    tp,
                    tier,
                    fleet=f"f{f}",
                    gang=f"g{f}" if gang_size > 1 else None,
                    gang_size=gang_size,
                    node_selector=selector,
                    tolerations=tolerations,
                    spread=spread,
                    pack=pack,
                )
            )
    bound: list[Pod] = []
    pending: list[Pod] = []
    state = ClusterState(Snapshot(nodes=nodes, pending=tuple(pods)))
    for pod in pods:
        if allow_bound and pod.gang is None and draw(st.booleans()):
            target = draw(st.sampled_from([n.name for n in nodes]))
            if state.fits(pod, target):
                state.place(pod, target)
                bound.append(
                    tp_pod(
                        pod.name,
                        pod.requests.gpu,
                        pod.tier,
                        pod.fleet,
                        node=target,
                        managed=draw(st.booleans()),
                        node_selector=pod.node_selector,
                        tolerations=pod.tolerations,
                        spread=pod.spread,
                        pack=pod.pack,
                    )
                )
                continue
        pending.append(pod)
    return Snapshot(nodes=nodes, bound=tuple(bound), pending=tuple(pending))


def brute_force_best(snap: Snapshot) -> tuple[int, ...]:
    """The best placed-per-tier vector over every assignment of pending pods (no running pods)."""
    tiers = snap.all_tiers()
    best: tuple[int, ...] = tuple(0 for _ in tiers)
    options = [None, *(n.name for n in snap.nodes)]
    for choice in itertools.product(options, repeat=len(snap.pending)):
        state = ClusterState(Snapshot(nodes=snap.nodes, pending=snap.pending))
        ok = True
        for pod, node in zip(snap.pending, choice, strict=True):
            if node is None:
                continue
            if not state.fits(pod, node):
                ok = False
                break
            state.place(pod, node)
        if not ok:
            continue
        placed = [p for p, node in zip(snap.pending, choice, strict=True) if node is not None]
        gangs = Counter(p.gang for p in placed if p.gang is not None)
        if any(count != 2 for count in gangs.values()):
            continue
        per_tier = Counter(p.tier for p in placed)
        best = max(best, tuple(per_tier.get(t, 0) for t in tiers))
    return best


FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(snapshots())
def test_every_policy_respects_the_hard_rules(snap: Snapshot) -> None:
    from flotilla.placement.cpsat.solver import solve

    for plan in (solve(snap, 1.0, workers=1), schedule_best_fit(snap)):
        assert violations(snap, plan) == [], plan.approach
    # kube-scheduler knows no gangs: partial gangs are its only allowed failure
    default = schedule_default(snap)
    assert [v for v in violations(snap, default) if not v.startswith("gang ")] == []


@FAST
@given(snapshots())
def test_solver_never_worse_than_its_greedy_warm_start(snap: Snapshot) -> None:
    from flotilla.placement.cpsat.solver import solve

    tiers = snap.all_tiers()
    ours = lex_key(evaluate(snap, solve(snap, 1.0, workers=1)), tiers)
    greedy = lex_key(evaluate(snap, schedule_best_fit(snap)), tiers)
    assert ours[: len(tiers)] >= greedy[: len(tiers)]


@FAST
@given(snapshots(max_nodes=3, max_pods=4, allow_bound=False))
def test_optimal_plans_match_brute_force(snap: Snapshot) -> None:
    from flotilla.placement.cpsat.solver import solve

    if len(snap.pending) > 6:
        return
    tiers = snap.all_tiers()
    for approach in ("classes", "direct"):
        plan = solve(snap, 2.0, workers=1, approach=approach)  # type: ignore[arg-type]
        ours = tuple(evaluate(snap, plan).placed_by_tier.get(t, 0) for t in tiers)
        best = brute_force_best(snap)
        assert ours <= best
        if plan.status is Status.OPTIMAL:
            assert ours == best, (approach, plan.notes)
