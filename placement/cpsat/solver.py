"""`solve`: the placement solver, a pure function from a snapshot and a time budget to a plan.

Order of work: best-fit first (milliseconds; a valid plan exists from then on), symmetry reduction,
the count model, then the lexicographic stages of Christensen et al. (2025): for each tier, highest
first, keep as many of its running pods as the higher tiers allow (running pods give way only to a
higher tier), then maximise the pods placed at that tier or above, fixing each result; then
minimise disruption (evict 1, move 2); then open as few fresh nodes as possible (whole nodes stay
free for TP=8 replicas), keep soft spread and pack fleets into few domains. Each stage is hinted
with the previous solution and gets an equal share of the time left. The best of the decoded plan
and the greedy plan is returned, so the result is never worse than the warm start, whatever CP-SAT
managed within the budget.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Literal

from ortools.sat.python import cp_model

from flotilla.placement.cpsat.classes import reduce_snapshot
from flotilla.placement.cpsat.decode import decode, hint_from_assignment
from flotilla.placement.cpsat.model import build_model
from flotilla.placement.heuristics.bestfit import greedy_assignment
from flotilla.placement.rules.metrics import evaluate, lex_key
from flotilla.placement.types.plan import Plan, Stage, Status
from flotilla.placement.types.planbuild import plan_from_assignment
from flotilla.placement.types.snapshot import Snapshot

Approach = Literal["classes", "direct"]
AUTO_MOVES_MAX_NODES = 64  # beyond this, moving running pods makes every node its own class
DECODE_RESERVE = 0.15  # share of the budget kept for decoding and plan building


class _CriterionProven(cp_model.CpSolverSolutionCallback):
    """Stops a tier stage once the bound proves its criterion (objective // weight) optimal."""

    def __init__(self, solver: cp_model.CpSolver, weight: int, maximise: bool) -> None:
        super().__init__()
        self._solver, self._weight, self._maximise = solver, weight, maximise
        self._best: float | None = None

    def on_solution_callback(self) -> None:
        self._best = self.objective_value
        self._check(self.best_objective_bound)

    def on_bound(self, bound: float) -> None:
        self._check(bound)

    def _check(self, bound: float) -> None:
        if self._best is None or not self._maximise:
            return
        if bound // self._weight <= self._best // self._weight:
            self._solver.stop_search()


def _fix(model: cp_model.CpModel, criterion: cp_model.IntVar, value: int, maximise: bool) -> None:
    if maximise:
        model.add(criterion >= value)
    else:
        model.add(criterion <= value)


def solve(
    snapshot: Snapshot,
    budget_s: float = 1.0,
    *,
    workers: int = 0,
    approach: Approach = "classes",
    moves: bool | None = None,
    seed: int = 0,
) -> Plan:
    """Place pending pods; `workers=0` uses every core; `moves=None` allows moves on small clusters."""
    started = time.perf_counter()
    deadline = started + budget_s
    greedy = greedy_assignment(snapshot)
    greedy_plan = plan_from_assignment(
        snapshot, greedy, status=Status.HEURISTIC, approach="best-fit", seconds=time.perf_counter() - started
    )
    if not snapshot.pending:
        return replace(greedy_plan, status=Status.OPTIMAL, approach=approach, notes=("nothing pending",))

    allow_moves = moves if moves is not None else len(snapshot.nodes) <= AUTO_MOVES_MAX_NODES
    red = reduce_snapshot(snapshot, allow_moves=allow_moves, per_node=approach == "direct")
    cm = build_model(red)
    model = cm.model
    variables = [*cm.x.values(), *cm.y.values(), *cm.units.values(), *cm.moved.values()]
    by_name = {v.name: v for v in variables}
    for name, value in hint_from_assignment(cm, greedy).items():
        model.add_hint(by_name[name], value)

    # Stages: (name, maximise?, criterion fixed afterwards, objective, trivial bound of the criterion).
    # A tier stage also rewards lower tiers with a weight too small to trade against its own
    # criterion, so its solution is a good hint for the next stage instead of an arbitrary one.
    tiers = sorted(cm.placed_by_tier, reverse=True)
    everything = cp_model.LinearExpr.sum(list(cm.placed_by_tier.values()))
    pods_of = {g.index: len(g.running) + sum(len(u) for u in g.units) for g in red.groups}
    weight = 1 + sum(pods_of.values())
    stages: list[tuple[str, bool, cp_model.LinearExprT, cp_model.LinearExprT, int | None]] = []
    for t in tiers:
        if t in cm.survivors_by_tier:
            # running pods of tier t give way only to higher tiers, never to pending pods of tier t
            survivors = cm.survivors_by_tier[t]
            running = sum(len(g.running) for g in red.groups if g.tier == t)
            stages.append(
                (f"running tier {t} kept", True, survivors, weight * survivors + everything, running)
            )
        at_least_t = cp_model.LinearExpr.sum([cm.placed_by_tier[u] for u in tiers if u >= t])
        upper = sum(n for gi, n in pods_of.items() if red.groups[gi].tier >= t)
        stages.append((f"placed tier>={t}", True, at_least_t, weight * at_least_t + everything, upper))
    stages += [
        ("disruption", False, cm.disruption, cm.disruption, None),
        ("fresh nodes + spread/pack", False, cm.consolidation, cm.consolidation, None),
    ]

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = workers or (os.cpu_count() or 1)
    solver.parameters.random_seed = seed
    # each criterion as a variable, so its value can be read off any solution (a stage that finds
    # nothing new fixes the value the previous solution already reaches)
    criteria = []
    for i, (_, _, expr, _, top) in enumerate(stages):
        criterion = model.new_int_var(0, top if top is not None else 10**12, f"criterion_{i}")
        model.add(criterion == expr)
        criteria.append(criterion)
    records: list[Stage] = []
    solution: list[int] | None = None
    proven = True  # every tier stage and the disruption stage proven optimal
    for i, (name, maximise, expr, objective, top) in enumerate(stages):
        remaining = deadline - time.perf_counter() - DECODE_RESERVE * budget_s
        if remaining <= 0.001:
            proven = proven and i >= len(stages) - 1
            records.append(Stage(name, float("nan"), float("nan"), "SKIPPED (budget)", 0.0))
            break
        # Objective: this stage's criterion, earlier ones are already fixed as constraints
        if maximise:
            model.maximize(objective)
        else:
            model.minimize(objective)
        # Parameters: a share of the time left for this stage and the ones after it; a tier
        # stage stops as soon as its own criterion is proven, lower tiers are only its hint
        # the first stage also pays for presolve and the first solution: it gets a double share
        left = len(stages) - i
        solver.parameters.max_time_in_seconds = remaining * (2 / (left + 1) if i == 0 else 1 / left)
        watch = _CriterionProven(solver, weight if maximise else 1, maximise)
        solver.best_bound_callback = watch.on_bound
        t0 = time.perf_counter()
        status = solver.solve(model, watch)
        seconds = time.perf_counter() - t0
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            proven = False
            if solution is None:
                records.append(Stage(name, float("nan"), float("nan"), solver.status_name(status), seconds))
                break
            value = solution[criteria[i].index]
            kept = f"{solver.status_name(status)}: previous solution kept"
            records.append(Stage(name, float(value), float("nan"), kept, seconds))
            _fix(model, criteria[i], value, maximise)
            continue
        value = solver.value(expr)
        bound = solver.best_objective_bound
        done = status == cp_model.OPTIMAL
        if maximise:
            # objective = weight * criterion + lower tiers (< weight): the criterion is proven
            # optimal once the bound leaves no room for one more unit of it
            bound = min(bound // weight, top if top is not None else bound)
            done = bound <= value
        records.append(Stage(name, float(value), float(bound), "OPTIMAL" if done else "FEASIBLE", seconds))
        if not done and i < len(stages) - 1:
            proven = False
        # Fix this stage's result (its optimum, or the value reached) for the stages after it
        _fix(model, criteria[i], value, maximise)
        # Hint the next stage with this solution, every variable included
        solution = list(solver.response_proto.solution)
        model.clear_hints()  # type: ignore[no-untyped-call]
        model.proto.solution_hint.vars.extend(range(len(solution)))
        model.proto.solution_hint.values.extend(solution)

    notes = list(cm.notes)
    if not allow_moves and any(p.managed for p in snapshot.bound):
        notes.append("moves disabled: optimal among plans that move no running pod")
    if any(c.restricted for c in red.classes):
        notes.append("keep patterns restricted on some nodes: no optimality certificate")
        proven = False
    label = f"cp-sat/{approach}"
    if solution is None:
        return replace(
            greedy_plan,
            approach=f"{label} (no solution in budget: best-fit)",
            stages=tuple(records),
            seconds=time.perf_counter() - started,
            notes=tuple(notes),
        )

    def val(var: cp_model.IntVar) -> int:
        return solution[var.index]

    decoded = decode(
        snapshot,
        cm=cm,
        x={k: val(v) for k, v in cm.x.items()},
        y={k: val(v) for k, v in cm.y.items()},
        units={k: val(v) for k, v in cm.units.items()},
        moved={k: val(v) for k, v in cm.moved.items()},
    )
    if not decoded.realised:
        notes.append(f"decode dropped {decoded.dropped_units} units the relaxed model placed")
    plan = plan_from_assignment(
        snapshot,
        decoded.assignment,
        status=Status.OPTIMAL if proven and decoded.realised else Status.FEASIBLE,
        approach=label,
        seconds=time.perf_counter() - started,
        stages=tuple(records),
        notes=tuple(notes),
    )
    all_tiers = snapshot.all_tiers()
    if lex_key(evaluate(snapshot, plan), all_tiers) < lex_key(evaluate(snapshot, greedy_plan), all_tiers):
        notes.append("decoded plan worse than best-fit: returning best-fit")
        return replace(
            greedy_plan,
            status=Status.FEASIBLE,
            approach=f"{label} (best-fit kept)",
            stages=tuple(records),
            seconds=time.perf_counter() - started,
            notes=tuple(notes),
        )
    return plan
