"""The solver's output: what to bind, evict and move, and how good and how certain that is.

A plan is applied by the in-cluster loop (bind through pods/binding, evict through the Eviction API)
and compared across policies by the benchmark, so it carries its own quality record: status, the
objective reached at every lexicographic stage and the approach that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    OPTIMAL = "OPTIMAL"  # every stage proven optimal on an exact (or realised relaxed) model
    FEASIBLE = "FEASIBLE"  # valid plan, optimality not proven
    HEURISTIC = "HEURISTIC"  # produced by a heuristic (greedy, kube-scheduler re-implementation)


@dataclass(frozen=True, slots=True)
class Binding:
    pod: str
    node: str


@dataclass(frozen=True, slots=True)
class Eviction:
    pod: str
    node: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Move:
    """A running pod evicted from `source` and re-placed on `target` (its replacement is bound there)."""

    pod: str
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    objective: float
    bound: float
    status: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Plan:
    bindings: tuple[Binding, ...]
    evictions: tuple[Eviction, ...] = ()
    moves: tuple[Move, ...] = ()
    unplaced: tuple[str, ...] = ()
    status: Status = Status.HEURISTIC
    approach: str = ""
    stages: tuple[Stage, ...] = ()
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def placement(self, bound: dict[str, str]) -> dict[str, str]:
        """Pod name -> node after the plan, starting from the bound pods' current nodes."""
        result = dict(bound)
        for e in self.evictions:
            result.pop(e.pod, None)
        for m in self.moves:
            result[m.pod] = m.target
        for b in self.bindings:
            result[b.pod] = b.node
        return result
