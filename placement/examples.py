"""Small hand-made snapshots with known optima: the cases the solver exists for, shared by tests and docs.

Each builder documents the optimum a person can check by hand, so a test can assert it exactly.
"""

from __future__ import annotations

from flotilla.placement.types.snapshot import (
    Node,
    Pack,
    Pod,
    Resources,
    Spread,
    SpreadMode,
    Taint,
    Toleration,
)

CPU_PER_GPU, MEM_PER_GPU = 12_000, 100_000


def gpu_node(
    name: str,
    gpus: int = 8,
    labels: tuple[tuple[str, str], ...] = (),
    taints: tuple[Taint, ...] = (),
    ready: bool = True,
) -> Node:
    """An 8-GPU node (by default) with CPU and memory that never bind before GPUs do."""
    return Node(
        name, Resources(gpus, 16_000 * max(gpus, 1), 131_072 * max(gpus, 1), 110), labels, taints, ready
    )


def tp_pod(
    name: str,
    tp: int,
    tier: int = 0,
    fleet: str = "",
    *,
    node: str | None = None,
    managed: bool = True,
    gang: str | None = None,
    gang_size: int = 1,
    tolerations: tuple[Toleration, ...] = (),
    node_selector: tuple[tuple[str, str], ...] = (),
    spread: Spread | None = None,
    pack: Pack | None = None,
) -> Pod:
    """A replica with `tp` GPUs (tensor parallelism) and CPU/memory in proportion."""
    return Pod(
        name,
        Resources(tp, CPU_PER_GPU * tp, MEM_PER_GPU * tp),
        tier=tier,
        fleet=fleet or name,
        node=node,
        managed=managed,
        gang=gang,
        gang_size=gang_size,
        tolerations=tolerations,
        node_selector=node_selector,
        spread=spread,
        pack=pack,
    )


def hard_spread(max_per_domain: int = 1, key: str = "kubernetes.io/hostname") -> Spread:
    return Spread(SpreadMode.HARD, key, max_per_domain)


def soft_spread(max_per_domain: int = 1, key: str = "kubernetes.io/hostname") -> Spread:
    return Spread(SpreadMode.SOFT, key, max_per_domain)


def soft_pack(key: str = "kubernetes.io/hostname") -> Pack:
    return Pack(SpreadMode.SOFT, key)


def hard_pack(key: str = "kubernetes.io/hostname") -> Pack:
    return Pack(SpreadMode.HARD, key)
