"""The solver's input: an immutable picture of the cluster at one instant.

Frozen dataclasses rather than pydantic models: the solver builds and hashes tens of thousands of these
per call, and the in-cluster loop converts Kubernetes objects into them once at the edge. Everything a
placement decision depends on is here, so every policy (CP-SAT, kube-scheduler re-implementation,
best-fit) is a pure function of a `Snapshot`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

HOSTNAME_KEY = "kubernetes.io/hostname"
GPU_PRODUCT_KEY = "nvidia.com/gpu.product"


@dataclass(frozen=True, slots=True)
class Resources:
    """Requests or capacity: GPUs, CPU in millicores, memory in MiB, pod slots."""

    gpu: int = 0
    cpu_m: int = 0
    mem_mi: int = 0
    pods: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.gpu + other.gpu, self.cpu_m + other.cpu_m, self.mem_mi + other.mem_mi, self.pods + other.pods
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.gpu - other.gpu, self.cpu_m - other.cpu_m, self.mem_mi - other.mem_mi, self.pods - other.pods
        )

    def fits_in(self, capacity: Resources) -> bool:
        return (
            self.gpu <= capacity.gpu
            and self.cpu_m <= capacity.cpu_m
            and self.mem_mi <= capacity.mem_mi
            and self.pods <= capacity.pods
        )

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.gpu, self.cpu_m, self.mem_mi, self.pods)


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"  # NoSchedule | PreferNoSchedule | NoExecute


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""  # empty key with operator Exists tolerates everything
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str = ""  # empty tolerates every effect


class SpreadMode(StrEnum):
    HARD = "hard"
    SOFT = "soft"


@dataclass(frozen=True, slots=True)
class Spread:
    """At most `max_per_domain` pods of the fleet per topology domain (hard), or penalised above it (soft).

    A cap per domain rather than kube's maxSkew: it is what "spread replicas for availability" means
    for a fleet, and it stays linear in the solver's per-class counts.
    """

    mode: SpreadMode = SpreadMode.HARD
    topology_key: str = HOSTNAME_KEY
    max_per_domain: int = 1


@dataclass(frozen=True, slots=True)
class Pack:
    """Keep the fleet's pods in as few topology domains as possible (soft), or in one domain (hard).

    Soft: the solver's last stage minimises the domains the fleet occupies, its bound pods included,
    so replicas that arrive in separate batches still join the nodes where the fleet already runs.
    Hard (kube's required podAffinity on the fleet): a pod may only go to a domain where the fleet
    already has a pod; the first pod of the fleet may go anywhere. A hard-packed replica that does not
    fit into the fleet's domains stays pending.
    """

    mode: SpreadMode = SpreadMode.SOFT
    topology_key: str = HOSTNAME_KEY


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    allocatable: Resources
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()
    ready: bool = True

    def label(self, key: str) -> str | None:
        if key == HOSTNAME_KEY:
            return dict(self.labels).get(key, self.name)
        return dict(self.labels).get(key)


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod, pending (`node` is None) or bound. `managed` pods belong to flotilla and may be evicted.

    `gang` names the multi-pod replica a pod belongs to (all or none of its `gang_size` pods run);
    pods of one fleet with equal requests and constraints are interchangeable, which the solver
    exploits to scale.
    """

    name: str
    requests: Resources
    tier: int = 0
    fleet: str = ""
    node: str | None = None
    managed: bool = True
    gang: str | None = None
    gang_size: int = 1
    tolerations: tuple[Toleration, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    spread: Spread | None = None
    pack: Pack | None = None

    @property
    def demand(self) -> Resources:
        """What the pod takes from a node: its requests plus one pod slot."""
        r = self.requests
        return Resources(r.gpu, r.cpu_m, r.mem_mi, 1)

    @property
    def unit(self) -> str:
        """The all-or-nothing unit: the gang, or the pod alone."""
        return self.gang if self.gang is not None else f"pod/{self.name}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    nodes: tuple[Node, ...]
    bound: tuple[Pod, ...] = ()
    pending: tuple[Pod, ...] = ()
    tiers: tuple[int, ...] = field(default=())

    def all_tiers(self) -> tuple[int, ...]:
        """Tiers present, highest first."""
        return tuple(sorted({p.tier for p in (*self.bound, *self.pending)} | set(self.tiers), reverse=True))
