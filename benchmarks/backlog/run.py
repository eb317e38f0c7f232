"""A router-held backlog in the fleet simulator: does holding requests at the router, and ordering
them there, make predicted lengths pay? (Issue 17, in the simulator; the live runs are in
README.md.)

Reproduce (from the repository root; about six minutes on this 2-core machine):

    .venv/bin/python -P benchmarks/backlog/run.py

Writes `results.md`, `results.json` and `e2e-by-load.png` next to this file. Every arm runs the
router's own code (policies, dispatch, queue orders, KV admission) in `flotilla.sim`. The router
holds a backlog in one of two ways: a fixed number of slots per instance
(`max_inflight_per_instance`, each of `--slots`, instead of vLLM's 256), or its KV budget
(`kv_usage_limit`, from the engines' own KV metrics); requests beyond it wait at the router, where
the queue order picks the next one when room frees. Loads: steady at `--loads` of the measured
capacity (the trace's arrivals rescaled), and `--bursts` (the trace's arrivals compressed into a few
bursts above capacity with idle gaps between, at the same mean load).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flotilla.profiles import load_profile
from flotilla.sim import workloads
from flotilla.sim.bench import save_figure
from flotilla.sim.capacity import measured_capacity
from flotilla.sim.metrics import Slo, summarize
from flotilla.sim.predictions import has_text, learned_lengths
from flotilla.sim.scenario import Scenario
from flotilla.sim.simulator import SimConfig, simulate

HERE = Path(__file__).parent
NO_BACKLOG = 256  # vLLM's max_num_seqs: the router passes everything on
KV_BUDGET = 0.9
"""The router's memory-aware admission (`kv_usage_limit`): an instance takes a request only while
its estimated KV use, with the request's prompt and predicted output, stays below this."""


PROFILE = "h100-llama3-8b"
SLICE_TOKENS = 256


@dataclass(frozen=True)
class Arm:
    name: str
    scenario: Scenario
    slots: int
    """Router slots per instance (`max_inflight_per_instance`)."""
    predictive: bool
    """Uses a prediction of the output length (learned, or the oracle's true one): the targets
    compare these with the best arm that does not."""


def arms(fixed_slots: list[int], slowdowns: list[float], text: bool) -> list[Arm]:
    """`text`: the workload has prompt text, so the learned predictor can run."""
    lwp: dict[str, Any] = {"policy": "least_work", "params": {"prefix_match": True}}
    bounded = {"aging_per_s": 0.0, "starvation_s": 60.0}
    unbounded = {"aging_per_s": 0.0, "starvation_s": 1e9}
    kv = {"kv_usage_limit": KV_BUDGET}

    def arm(name: str, predictive: bool = False, slots: int = NO_BACKLOG, **more: Any) -> Arm:
        return Arm(name, Scenario(name=name, **{**lwp, **more}), slots, predictive)

    work, output = "shortest_work_first", "shortest_predicted_first"
    return [
        Arm("round_robin", Scenario(name="round_robin", policy="round_robin"), NO_BACKLOG, False),
        Arm("least_request", Scenario(name="least_request", policy="least_request"), NO_BACKLOG, False),
        arm("least_work+prefix"),
        *(
            a
            for n in fixed_slots
            for a in (
                arm(f"{n} slots, fcfs", slots=n),
                arm(f"{n} slots, work-first, prompt only", slots=n, queue=work, queue_params=unbounded),
            )
        ),
        arm(
            f"{fixed_slots[-1]} slots, output-first, oracle",
            True,
            slots=fixed_slots[-1],
            queue=output,
            queue_params=unbounded,
            predictor="oracle",
        ),
        arm("KV budget, fcfs", **kv),
        arm("KV budget, work-first, prompt only", queue=work, queue_params=unbounded, **kv),
        arm("KV budget, work-first, prompt only, 60 s bound", queue=work, queue_params=bounded, **kv),
        arm("router defaults: KV budget, work-first (aging, 10 s bound)", queue=work, **kv),
        arm(
            "KV budget, output-first, oracle",
            True,
            queue=output,
            queue_params=unbounded,
            predictor="oracle",
            **kv,
        ),
        arm(
            "KV budget, work-first, oracle",
            True,
            queue=work,
            queue_params=unbounded,
            predictor="oracle",
            **kv,
        ),
        arm(f"least_work+prefix, slices of {SLICE_TOKENS}", slice_tokens=SLICE_TOKENS),
        *target_arms(slowdowns, text, arm),
    ]


def target_arms(slowdowns: list[float], text: bool, arm: Any) -> list[Arm]:
    """The target batch from the step-time profile (`batch_target`), with the KV budget too: the
    admission budget of the issue, from the engine's own signals."""
    # The orders' own defaults (aging 20 units/s, due after 10 s), as the router runs them.
    bounded: dict[str, Any] = {}
    work, output, las = "shortest_work_first", "shortest_predicted_first", "least_attained_service"
    out: list[Arm] = []
    for k, slowdown in enumerate(slowdowns):
        on = {
            "kv_usage_limit": KV_BUDGET,
            "batch_target": {"profile": PROFILE, "max_decode_slowdown": slowdown},
        }
        label = f"target {slowdown:g}x"
        out += [
            arm(f"{label}, fcfs", **on),
            arm(f"{label}, work-first, prompt only", queue=work, queue_params=bounded, **on),
        ]
        if k:  # the orders below at the first slowdown only
            continue
        out += [
            arm(
                f"{label}, LAS, slices of {SLICE_TOKENS}",
                queue=las,
                queue_params=bounded,
                slice_tokens=SLICE_TOKENS,
                **on,
            ),
            arm(
                f"{label}, work-first, oracle",
                True,
                queue=work,
                queue_params=bounded,
                predictor="oracle",
                **on,
            ),
            arm(
                f"{label}, output-first, oracle",
                True,
                queue=output,
                queue_params=bounded,
                predictor="oracle",
                **on,
            ),
        ]
        if text:
            out += [
                arm(
                    f"{label}, work-first, learned",
                    True,
                    queue=work,
                    queue_params=bounded,
                    predictor="learned",
                    **on,
                ),
                arm(
                    f"{label}, output-first, learned",
                    True,
                    queue=output,
                    queue_params=bounded,
                    predictor="learned",
                    **on,
                ),
            ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="mooncake_conversation,azure_conv,castillo_llama")
    ap.add_argument("--requests", type=int, default=2400)
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--loads", default="0.8,0.9,1.0,1.1")
    ap.add_argument(
        "--bursts",
        default="0.9,3,4",
        help="mean load, peak (x capacity), bursts: the trace's arrivals compressed into that many bursts",
    )
    ap.add_argument("--slots", default="16,96", help="router slots per instance of the fixed-slot arms")
    ap.add_argument("--slowdowns", default="2,3", help="max_decode_slowdown of the target-batch arms")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    profile = load_profile(PROFILE)
    limits = profile.limits
    slo = Slo()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in args.workloads.split(","):
        w = workloads.load(name, max_model_len=limits.max_model_len, limit=args.requests)
        capacity = measured_capacity(w.requests, profile, limits, args.instances) * args.instances
        text = has_text(w.requests)
        # Predictions depend on the prompt alone: the learned ones are made once per trace.
        learned = learned_lengths(w.requests, Scenario(name="-", policy="-").artifact) if text else None
        lineup = arms(
            [int(x) for x in args.slots.split(",")], [float(x) for x in args.slowdowns.split(",")], text
        )
        mean, peak, bursts = (float(x) for x in args.bursts.split(","))
        shapes = [
            (f"{load:.0%}", load, workloads.at_rate(w.requests, load * capacity))
            for load in (float(x) for x in args.loads.split(","))
        ]
        burst_s = len(w.requests) / bursts / (peak * capacity)
        shapes.append(
            (
                f"{mean:.0%}, {bursts:g} bursts at {peak:g}x",
                mean,
                workloads.in_bursts(w.requests, mean * capacity, peak * capacity, burst_s),
            )
        )
        for shape, load, requests in shapes:
            for arm in lineup:
                slots = arm.slots
                config = SimConfig(instances=args.instances, max_inflight=slots)
                predicted = learned if arm.scenario.predictor == "learned" else None
                result = simulate(requests, profile, limits, arm.scenario, config, predicted=predicted)
                s = summarize(result, slo)
                wait = result.dispatched - result.arrival
                rows.append(
                    {
                        "workload": name,
                        "load": load,
                        "shape": shape,
                        "capacity_rps": capacity,
                        "arm": arm.name,
                        "predictive": arm.predictive,
                        "slots": slots,
                        "max_router_wait_s": float(np.nanmax(wait)),
                        **asdict(s),
                    }
                )
                print(
                    f"{name} {shape} {arm.name:34s} e2e {s.e2e_mean:7.2f} p99 {s.e2e_p99:7.2f}",
                    flush=True,
                )
    wall = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1)
    )
    (args.out / "results.md").write_text(table(rows, args, wall))
    plot(rows, args.out / "e2e-by-load.png")


def table(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float) -> str:
    out = [
        "# Router-held backlog in the fleet simulator",
        "",
        f"`.venv/bin/python -P benchmarks/backlog/run.py` ({args.instances} simulated H100 engines,"
        f" {args.requests} requests per trace; the router holds a backlog either by {args.slots} slots"
        f" per instance (the others have {NO_BACKLOG}) or by its KV budget (`kv_usage_limit`"
        f" {KV_BUDGET}); simulation wall time {wall:.0f} s). Ratios (mean, p99 of e2e; lower is"
        " better) are to least_work+prefix, the best policy before this benchmark, and to the best arm"
        " at that load that uses no output-length prediction.",
        "",
    ]
    for name in dict.fromkeys(str(r["workload"]) for r in rows):
        out += [f"## {name}", ""]
        out.append(
            "| load | arm | e2e mean s | e2e p99 s | TTFT mean s | TTFT p99 s | goodput rps"
            " | max router wait s | mean, p99 / least_work+prefix | mean, p99 / best non-predictive |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for shape in dict.fromkeys(r["shape"] for r in rows if r["workload"] == name):
            here = [r for r in rows if r["workload"] == name and r["shape"] == shape]
            best = min((r for r in here if not r["predictive"]), key=lambda r: r["e2e_mean"])
            (ours,) = [r for r in here if r["arm"] == "least_work+prefix"]

            def ratios(r: dict[str, Any], to: dict[str, Any]) -> str:
                mean = r["e2e_mean"] / to["e2e_mean"]
                return f"{mean:.2f}, {r['e2e_p99'] / to['e2e_p99']:.2f}"

            for r in here:
                mark = " (best non-predictive)" if r is best else ""
                out.append(
                    f"| {shape} | {r['arm']}{mark} | {r['e2e_mean']:.2f} | {r['e2e_p99']:.2f}"
                    f" | {r['ttft_mean']:.2f} | {r['ttft_p99']:.2f}"
                    f" | {r['goodput_rps']:.2f} | {r['max_router_wait_s']:.1f}"
                    f" | {ratios(r, ours)} | {ratios(r, best)} |"
                )
        out.append("")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(str(r["workload"]) for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for arm in dict.fromkeys(str(r["arm"]) for r in rows):
            pts = [
                (r["load"], r["e2e_mean"])
                for r in rows
                if r["workload"] == name and r["arm"] == arm and "bursts" not in r["shape"]
            ]
            pts = [p for p in pts if math.isfinite(p[1])]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=arm)
        ax.set_title(name)
        ax.set_xlabel("load (fraction of measured capacity)")
        ax.set_ylabel("mean e2e latency (s)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
