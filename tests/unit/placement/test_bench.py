"""The benchmark's scenarios are seeded and realistic, and its report compares like with like."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from flotilla.placement.bench.report import approach_table, family_table, plot, policy_table
from flotilla.placement.bench.runner import Family, run_scenario, scenario_specs
from flotilla.placement.bench.scenarios import ScenarioSpec, generate
from flotilla.placement.rules.metrics import violations
from flotilla.placement.types.plan import Plan
from flotilla.placement.types.snapshot import Snapshot


def test_scenarios_are_seeded_and_hit_the_target_utilisation() -> None:
    spec = ScenarioSpec("t", 32, 3, 1.0, 0.5, 11)
    a, b = generate(spec), generate(spec)
    assert a == b
    demand = sum(p.requests.gpu for p in (*a.bound, *a.pending))
    capacity = sum(n.allocatable.gpu for n in a.nodes)
    assert 1.0 <= demand / capacity < 1.0 + 8 / capacity + 0.01
    # the bound pods are a valid placement
    assert violations(Snapshot(nodes=a.nodes, bound=a.bound), Plan(bindings=())) == []
    assert {p.tier for p in (*a.bound, *a.pending)} <= {0, 1, 2}


def test_constraint_scenarios_have_gangs_spread_and_selectors() -> None:
    snap = generate(ScenarioSpec("t", 64, 2, 1.0, 0.0, 3, constraints=True))
    pods = snap.pending
    assert any(p.gang_size == 2 for p in pods)
    assert any(p.spread is not None for p in pods)
    assert any(p.node_selector for p in pods)
    assert any(n.taints for n in snap.nodes)


def test_run_and_report(tmp_path: Path) -> None:
    families = (
        Family("tiny", "tiny", (8,), 2, 0.5),
        Family("approaches", "both", (8,), 1, 0.5, approaches=("classes", "direct")),
    )
    rows = [run_scenario(f, spec, 0.5, 1) for f, spec in scenario_specs(families, 0)]
    assert len(rows) == 3
    for row in rows:
        assert all(r.violations == 0 for r in row.results)
        assert {r.policy for r in row.results} >= {"cp-sat/classes", "kube-default", "best-fit"}
    assert "| tiny | 2 |" in family_table(rows)
    assert "kube-default" in policy_table(rows)
    assert "cp-sat/direct" in approach_table(rows)
    plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_cli_solve_prints_the_comparison() -> None:
    from flotilla.placement.cli import app

    result = CliRunner().invoke(app, ["solve", "--nodes", "8", "--budget", "0.3", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "kube-default" in result.output and "best-fit" in result.output
