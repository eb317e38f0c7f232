"""Fit the step-time profile of vLLM (CPU) with the benchmark model to measure.py's steps.

    .venv/bin/python benchmarks/vllm_cpu_profile/fit.py

Reads results/steps.csv and results/meta.json and writes the shipped profile
flotilla/profiles/data/vllm-cpu-bench.json, results/fit.json, results/fit.md and results/fit.png.
The fit is the GPU calibration's (benchmarks/gpu_calibration/fit.py: exact non-negative least
squares on relative error, the knee on a grid), on the same terms.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from flotilla.profiles import EngineLimits, StepCoefficients, StepTimeProfile

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PROFILE_PATH = HERE.parents[1] / "flotilla" / "profiles" / "data" / "vllm-cpu-bench.json"
KNEES = range(0, 2049, 32)


def gpu_fit() -> ModuleType:
    """The GPU calibration's fitting module (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_fit", HERE.parent / "gpu_calibration" / "fit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load(path: Path, fitting: ModuleType) -> object:
    rows = list(csv.DictReader(path.open()))

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) for r in rows])

    for r in rows:
        r["kind"] = r["scenario"].split("-")[0]
    return fitting.Steps(
        rows,
        col("prefill_tokens"),
        col("attention_pairs"),
        col("decode_seqs"),
        col("kv_tokens"),
        col("seconds"),
    )


def main() -> None:
    fitting = gpu_fit()
    meta = json.loads((RESULTS / "meta.json").read_text())
    steps = load(RESULTS / "steps.csv", fitting)
    x, knee = fitting.fit(steps, KNEES)
    rel = (steps.design(knee) @ x) / steps.seconds - 1.0  # type: ignore[attr-defined]
    err = fitting.errors(rel)
    by_kind = {
        kind: fitting.errors(rel[[r["kind"] == kind for r in steps.rows]])  # type: ignore[attr-defined]
        for kind in sorted({r["kind"] for r in steps.rows})  # type: ignore[attr-defined]
    }
    coefficients = dict(zip(fitting.TERMS, (float(v) for v in x), strict=True))
    limits = meta["limits"]
    profile = StepTimeProfile(
        name="vllm-cpu-bench",
        model=(
            f"flotilla.vllmcpu's benchmark Llama (hidden {meta['model']['hidden_size']}, "
            f"{meta['model']['num_hidden_layers']} layers, vocabulary {meta['model']['vocab_size']}; bf16)"
        ),
        hardware=f"vLLM {meta['vllm']} on one CPU core ({meta['cpu']}), torch {meta['torch']}",
        source=(
            f"benchmarks/vllm_cpu_profile: {len(steps.seconds)} engine steps of vLLM's own engine "  # type: ignore[attr-defined]
            "(served as the benchmarks serve it, timed from its token stream: scheduling, model, "
            "sampling, detokenizing, the hand-offs between vLLM's processes and the HTTP stream), "
            f"fitted by fit.py; RMS relative error {err['rms_rel']:.1%}, max {err['max_abs_rel']:.1%}."
        ),
        coefficients=StepCoefficients(**coefficients, compute_knee_tokens=knee or 0),
        limits=EngineLimits(**limits),
    )
    PROFILE_PATH.write_text(profile.model_dump_json(indent=2) + "\n")
    summary = {
        "coefficients": coefficients,
        "compute_knee_tokens": knee,
        "error": err,
        "error_by_kind": by_kind,
        "rows": len(steps.seconds),  # type: ignore[attr-defined]
    }
    (RESULTS / "fit.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(steps, rel, summary, meta)
    print(json.dumps(summary, indent=2))


def write_report(steps: object, rel: np.ndarray, summary: dict[str, object], meta: dict[str, object]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = steps.seconds  # type: ignore[attr-defined]
    kinds = np.array([r["kind"] for r in steps.rows])  # type: ignore[attr-defined]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for kind in sorted(set(kinds)):
        m = kinds == kind
        ax.scatter(seconds[m] * 1000, seconds[m] * (1 + rel[m]) * 1000, s=8, label=kind, alpha=0.6)
    top = float(seconds.max() * 1000 * 1.1)
    ax.plot([0, top], [0, top], color="grey", lw=0.8)
    ax.set_xlabel("measured step time, ms")
    ax.set_ylabel("profile's step time, ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("vLLM 0.32 (CPU, 1 core), benchmark model: fit vs measurement")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "fit.png", dpi=120)
    plt.close(fig)

    err = summary["error"]
    assert isinstance(err, dict)
    lines = [
        "# vLLM (CPU) step-time profile: fit",
        "",
        f"{summary['rows']} steps, RMS relative error {err['rms_rel']:.1%}, mean {err['mean_abs_rel']:.1%}, "
        f"max {err['max_abs_rel']:.1%}. Measured {meta['started']} in {meta['seconds']} s.",
        "",
        "| term | value |",
        "|---|---:|",
    ]
    coefficients = summary["coefficients"]
    assert isinstance(coefficients, dict)
    for term, value in coefficients.items():
        lines.append(f"| {term} | {value:.4g} |")
    lines.append(f"| compute_knee_tokens | {summary['compute_knee_tokens']} |")
    lines += ["", "| steps | rows | RMS error | max error |", "|---|---:|---:|---:|"]
    by_kind = summary["error_by_kind"]
    assert isinstance(by_kind, dict)
    for kind, e in by_kind.items():
        lines.append(
            f"| {kind} | {int(np.sum(kinds == kind))} | {e['rms_rel']:.1%} | {e['max_abs_rel']:.1%} |"
        )
    (RESULTS / "fit.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
