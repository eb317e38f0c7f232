"""Run the three policies side by side on the same seeded scenarios and record what each achieved.

Side by side in one process and one run, on a machine shared with other jobs: absolute times are
noisy, so the report compares policies per scenario (who placed more higher-tier pods) and gives
the solver's wall time against its budget.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from flotilla.placement.bench.scenarios import ScenarioSpec, generate
from flotilla.placement.cpsat.solver import Approach, solve
from flotilla.placement.heuristics.bestfit import schedule_best_fit
from flotilla.placement.heuristics.kubedefault import schedule_default
from flotilla.placement.rules.metrics import evaluate, violations
from flotilla.placement.types.plan import Plan
from flotilla.placement.types.snapshot import Snapshot


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    sizes: tuple[int, ...]
    per_size: int
    bound_share: float
    constraints: bool = False
    pods: int | None = None
    approaches: tuple[Approach, ...] = ("classes",)


QUICK = (
    Family("paper", "paper-like: half the arrivals placed by the default, tiers 1-4", (16, 64, 256), 6, 0.5),
    Family("batch", "all pods pending at once on an empty cluster", (16, 64, 256, 1000), 3, 0.0),
    Family(
        "constraints",
        "gangs (TP=16 over 2 nodes), spread, 2 GPU products, tainted pool",
        (16, 64, 256),
        4,
        0.5,
        constraints=True,
    ),
    Family("scale", "1,000 nodes x 8 GPUs, 5,000 pods", (1000,), 2, 0.0, pods=5000),
    Family(
        "approaches",
        "count model over node classes vs one class per node (direct)",
        (16, 64, 256, 1000),
        2,
        0.5,
        approaches=("classes", "direct"),
    ),
)


def full_families() -> tuple[Family, ...]:
    """The full sweep: more seeds per size, and the paper's sizes up to 1,000 nodes everywhere."""
    return tuple(
        Family(
            f.name,
            f.description,
            tuple(sorted({*f.sizes, 1000})) if f.name in ("paper", "constraints") else f.sizes,
            f.per_size * 4,
            f.bound_share,
            f.constraints,
            f.pods,
            f.approaches,
        )
        for f in QUICK
    )


@dataclass
class PolicyResult:
    policy: str
    status: str
    seconds: float
    placed_by_tier: dict[int, int]
    pending_placed: int
    evictions: int
    moves: int
    stranded_gpus: int
    fragmented_gpus: int
    violations: int
    notes: list[str] = field(default_factory=list)


@dataclass
class ScenarioResult:
    family: str
    nodes: int
    tiers: int
    utilisation: float
    seed: int
    bound: int
    pending: int
    results: list[PolicyResult]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def scenario_specs(families: tuple[Family, ...], seed: int) -> Iterator[tuple[Family, ScenarioSpec]]:
    rng = random.Random(seed)
    for family in families:
        for size in family.sizes:
            for _ in range(family.per_size):
                yield (
                    family,
                    ScenarioSpec(
                        family=family.name,
                        nodes=size,
                        tiers=rng.randint(1, 4),
                        utilisation=round(rng.uniform(0.90, 1.05), 3),
                        bound_share=family.bound_share,
                        seed=rng.randrange(2**31),
                        constraints=family.constraints,
                        pods=family.pods,
                    ),
                )


def _record(policy: str, snap: Snapshot, plan: Plan, seconds: float) -> PolicyResult:
    m = evaluate(snap, plan)
    return PolicyResult(
        policy=policy,
        status=str(plan.status),
        seconds=seconds,
        placed_by_tier={int(k): v for k, v in m.placed_by_tier.items()},
        pending_placed=sum(m.pending_placed_by_tier.values()),
        evictions=m.evictions,
        moves=m.moves,
        stranded_gpus=m.stranded_gpus,
        fragmented_gpus=m.fragmented_gpus,
        violations=len(violations(snap, plan)),
        notes=list(plan.notes),
    )


def run_scenario(family: Family, spec: ScenarioSpec, budget_s: float, workers: int) -> ScenarioResult:
    snap = generate(spec)
    policies: list[tuple[str, Callable[[Snapshot], Plan]]] = [
        (f"cp-sat/{a}", partial(solve, budget_s=budget_s, workers=workers, approach=a))
        for a in family.approaches
    ]
    policies += [
        ("kube-default", partial(schedule_default, seed=spec.seed)),
        ("best-fit", schedule_best_fit),
    ]
    results = []
    for name, policy in policies:
        started = time.perf_counter()
        plan = policy(snap)
        results.append(_record(name, snap, plan, time.perf_counter() - started))
    return ScenarioResult(
        family=family.name,
        nodes=spec.nodes,
        tiers=spec.tiers,
        utilisation=spec.utilisation,
        seed=spec.seed,
        bound=len(snap.bound),
        pending=len(snap.pending),
        results=results,
    )


def replay_on_kwok(rows: list[ScenarioResult], specs: list[ScenarioSpec], run_dir: Path) -> int:
    """Replay the scenarios of `specs` on the real kube-scheduler; adds its result to `rows`."""
    import asyncio

    from flotilla.placement.bench.kwokreplay import replay, with_cluster

    by_seed = {(r.family, r.seed): r for r in rows}

    async def work(cluster: object) -> int:
        done = 0
        for spec in specs:
            row = by_seed.get((spec.family, spec.seed))
            if row is None:
                continue
            snap = generate(spec)
            plan = await replay(cluster, snap)
            row.results.append(_record(plan.approach, snap, plan, plan.seconds))
            done += 1
        return done

    done: int = asyncio.run(with_cluster(run_dir, work))
    return done
