"""Seeded scenarios like Christensen et al. (2025): GPU clusters, fleets of TP 1/2/4/8, tiers, load.

A scenario draws fleets until the GPU demand reaches the target utilisation (0.90 to 1.05 of the
cluster's GPUs), shuffles their pods into an arrival order and, like the paper, lets the default
scheduler place the first share of arrivals: those pods are the running ones, the rest are pending
when our solver is called. Families add the constraints the paper has not: gangs (TP=16 across two
nodes), spread, two GPU products with node selectors and a tainted pool.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from flotilla.placement.heuristics.kubedefault import schedule_default
from flotilla.placement.types.snapshot import (
    GPU_PRODUCT_KEY,
    HOSTNAME_KEY,
    Node,
    Pod,
    Resources,
    Snapshot,
    Spread,
    SpreadMode,
    Taint,
    Toleration,
)

NODE = Resources(gpu=8, cpu_m=128_000, mem_mi=1_048_576, pods=110)
CPU_PER_GPU, MEM_PER_GPU = 14_000, 120_000
TP_WEIGHTS = {1: 0.4, 2: 0.25, 4: 0.2, 8: 0.15}


@dataclass(frozen=True)
class ScenarioSpec:
    family: str
    nodes: int
    tiers: int
    utilisation: float
    bound_share: float
    seed: int
    constraints: bool = False
    pods: int | None = None  # fix the pod count instead of deriving it from utilisation (scale runs)


def generate(spec: ScenarioSpec) -> Snapshot:
    rng = random.Random(spec.seed)
    nodes = []
    for i in range(spec.nodes):
        labels: list[tuple[str, str]] = [
            (HOSTNAME_KEY, f"node-{i}"),
            ("topology.kubernetes.io/zone", f"z{i % 3}"),
        ]
        taints: tuple[Taint, ...] = ()
        if spec.constraints:
            labels.append((GPU_PRODUCT_KEY, "H100" if i % 4 else "A100"))
            if i % 8 == 7:
                taints = (Taint("flotilla.dev/reserved", "batch", "NoSchedule"),)
        nodes.append(Node(f"node-{i}", NODE, labels=tuple(labels), taints=taints))
    capacity = spec.nodes * NODE.gpu
    target = spec.utilisation * capacity
    tp_weights = dict(TP_WEIGHTS)
    if spec.pods is not None:
        tp_weights = {1: 0.6, 2: 0.3, 4: 0.07, 8: 0.03}
    pods: list[Pod] = []
    demand = 0
    fleet_no = 0
    while (demand < target) if spec.pods is None else (len(pods) < spec.pods):
        tp = rng.choices(list(tp_weights), weights=list(tp_weights.values()))[0]
        tier = rng.randrange(spec.tiers)
        replicas = rng.randint(1, max(2, spec.nodes // 4))
        fleet = f"f{fleet_no}"
        fleet_no += 1
        gang_size = 1
        selector: tuple[tuple[str, str], ...] = ()
        tolerations: tuple[Toleration, ...] = ()
        spread = None
        if spec.constraints:
            roll = rng.random()
            if roll < 0.15:
                tp, gang_size = 8, 2  # TP=16 over two nodes
            elif roll < 0.3:
                spread = Spread(SpreadMode.HARD if rng.random() < 0.5 else SpreadMode.SOFT, HOSTNAME_KEY, 1)
            if rng.random() < 0.3:
                selector = ((GPU_PRODUCT_KEY, "A100" if rng.random() < 0.3 else "H100"),)
            if rng.random() < 0.2:
                tolerations = (Toleration("flotilla.dev/reserved", "Equal", "batch", "NoSchedule"),)
        requests = Resources(tp, CPU_PER_GPU * tp, MEM_PER_GPU * tp)
        for r in range(replicas):
            for m in range(gang_size):
                pods.append(
                    Pod(
                        name=f"{fleet}-{r}-{m}" if gang_size > 1 else f"{fleet}-{r}",
                        requests=requests,
                        tier=tier,
                        fleet=fleet,
                        gang=f"{fleet}-{r}" if gang_size > 1 else None,
                        gang_size=gang_size,
                        tolerations=tolerations,
                        node_selector=selector,
                        spread=spread,
                    )
                )
                demand += tp
            if (demand >= target and spec.pods is None) or (spec.pods is not None and len(pods) >= spec.pods):
                break
    # arrival order: gangs arrive together
    units: dict[str, list[Pod]] = {}
    for p in pods:
        units.setdefault(p.unit, []).append(p)
    order = list(units.values())
    rng.shuffle(order)
    arrivals = [p for unit in order for p in unit]
    cut = int(len(arrivals) * spec.bound_share)
    # the default scheduler placed the first arrivals; whatever it left pending stays pending
    first = Snapshot(nodes=tuple(nodes), pending=tuple(arrivals[:cut]))
    placed = schedule_default(first, seed=spec.seed) if cut else None
    where = {b.pod: b.node for b in placed.bindings} if placed else {}
    bound = tuple(replace(p, node=where[p.name]) for p in arrivals[:cut] if p.name in where)
    pending = tuple(p for p in arrivals[:cut] if p.name not in where) + tuple(arrivals[cut:])
    return Snapshot(nodes=tuple(nodes), bound=bound, pending=pending)
