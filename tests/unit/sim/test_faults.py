"""Faults in the simulator: a killed engine loses its requests, unless slicing resumes them elsewhere."""

import numpy as np

from flotilla.profiles import StepTimeProfile
from flotilla.sim.faults import Fault
from flotilla.sim.request import SimRequest
from flotilla.sim.scenario import Scenario
from flotilla.sim.simulator import RunResult, SimConfig, simulate


def steady(n: int = 120) -> list[SimRequest]:
    return [SimRequest(i, 0.05 * i, 300, 200) for i in range(n)]


def run(profile: StepTimeProfile, faults: list[Fault], slice_tokens: int = 0) -> RunResult:
    sc = Scenario(name="lr", policy="least_request", slice_tokens=slice_tokens)
    return simulate(steady(), profile, profile.limits, sc, SimConfig(instances=3), faults=faults)


def test_a_killed_engine_loses_its_requests_without_slicing(profile: StepTimeProfile) -> None:
    r = run(profile, [Fault(kind="kill", instance=1, at=2.0)])
    assert r.failed.any()
    assert (r.instance[r.failed] == 1).all()
    assert np.isnan(r.finished[r.failed]).all()
    assert np.isfinite(r.finished[~r.failed]).all()
    # Nothing is sent to it once it is dead.
    assert (r.instance[r.arrival > 2.0] != 1).all()


def test_with_slicing_nothing_is_lost_and_the_stream_goes_on_elsewhere(profile: StepTimeProfile) -> None:
    whole = run(profile, [Fault(kind="kill", instance=1, at=2.0)])
    r = run(profile, [Fault(kind="kill", instance=1, at=2.0)], slice_tokens=64)
    assert not r.failed.any()
    assert np.isfinite(r.finished).all()
    assert (r.output_tokens == 200).all()
    lost = np.flatnonzero(whole.failed)
    assert len(lost) > 0
    assert (r.instance[lost] != 1).all()  # the same requests finished on the survivors


def test_a_removed_engine_drains_and_an_added_one_joins(profile: StepTimeProfile) -> None:
    r = run(profile, [Fault(kind="remove", instance=0, at=2.0), Fault(kind="add", instance=2, at=3.0)])
    assert not r.failed.any() and np.isfinite(r.finished).all()
    assert (r.instance[r.dispatched > 2.0] != 0).all()
    assert (r.instance[r.dispatched < 3.0] != 2).all()
    assert (r.instance[r.dispatched > 3.0] == 2).any()


def test_a_later_turn_of_a_lost_request_is_still_sent(profile: StepTimeProfile) -> None:
    first = SimRequest(0, 0.0, 300, 2000)
    later = SimRequest(1, 5.0, 400, 10, parent=0)
    sc = Scenario(name="rr", policy="round_robin")  # the first request goes to i000
    r = simulate(
        [first, later],
        profile,
        profile.limits,
        sc,
        SimConfig(instances=2),
        faults=[Fault(kind="kill", instance=0, at=1.0)],
    )
    assert r.failed.tolist() == [True, False]
    assert r.arrival[1] == 5.0 and np.isfinite(r.finished[1])


def test_a_drained_engine_can_be_added_back(profile: StepTimeProfile) -> None:
    r = run(profile, [Fault(kind="remove", instance=0, at=2.0), Fault(kind="add", instance=0, at=3.0)])
    assert (r.instance[r.dispatched < 2.0] == 0).any()
    assert (r.instance[(r.dispatched > 2.0) & (r.dispatched < 3.0)] != 0).all()
    assert (r.instance[r.dispatched > 3.0] == 0).any()


def test_the_fault_report_counts_losses_and_recovery(profile: StepTimeProfile) -> None:
    from flotilla.sim import faults_bench

    rows = faults_bench.run(
        steady(),
        profile=profile,
        limits=profile.limits,
        config=SimConfig(instances=3),
        policy="least_request",
        slice_tokens=64,
        rebalance={},
        fault_cases=faults_bench.cases(3, 2.0, 4.0),
        during_s=1.0,
        window_s=1.0,
        tolerance=1.2,
    )
    assert [(r.case, r.slice_tokens) for r in rows][:1] == [("kill 1 engine", 0)]
    whole = {r.case: r for r in rows if not r.slice_tokens}
    sliced = {r.case: r for r in rows if r.slice_tokens}
    assert whole["kill 1 engine"].lost > 0
    assert all(r.lost == 0 for r in sliced.values())
    assert "requests lost" in faults_bench.markdown(rows, during_s=1.0)
