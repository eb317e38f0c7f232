"""Fit the step-time profile to the GPU measurements (runs here, on the CPU).

    .venv/bin/python benchmarks/gpu_calibration/fit.py

Reads results/steps.csv and results/meta.json (written by calibrate.py on the GPU machine) and
writes the shipped profile flotilla/profiles/data/h100-llama3-8b.json, results/fit.json (the
coefficients and the fit error the unit tests hold the profile to), results/fit.md (tables for
the README) and results/fit.png (fit against measurement).

The fit is non-negative least squares on relative error (step times span 6 ms to 250 ms, and a
simulator cares about each step in proportion). Six unknowns make exact NNLS by trying every
active set cheap, so no solver library is needed; the knee is searched on a grid.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flotilla.profiles import EngineLimits, StepCoefficients, StepTimeProfile

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PROFILE_PATH = HERE.parents[1] / "flotilla" / "profiles" / "data" / "h100-llama3-8b.json"
TERMS = ["base_s", "prefill_token_s", "prefill_attn_s", "decode_seq_s", "kv_token_s", "compute_token_s"]
KNEES = range(0, 1025, 16)
GPU_MEMORY_UTILIZATION = 0.9
BLOCK_SIZE = 16


@dataclass(frozen=True)
class Steps:
    """Graph-mode rows of steps.csv as arrays, in the profile's units."""

    rows: list[dict[str, str]]
    prefill_tokens: np.ndarray
    attention_pairs: np.ndarray
    decode_seqs: np.ndarray
    kv_tokens: np.ndarray
    seconds: np.ndarray

    def design(self, knee: int | None) -> np.ndarray:
        """One column per term of TERMS; without a knee, the five linear terms alone."""
        cols = [np.ones_like(self.seconds), self.prefill_tokens, self.attention_pairs]
        cols += [self.decode_seqs, self.kv_tokens]
        if knee is not None:
            cols.append(np.maximum(0.0, self.prefill_tokens + self.decode_seqs - knee))
        return np.stack(cols, axis=1)


def load_steps(path: Path, mode: str = "graph") -> Steps:
    rows = [r for r in csv.DictReader(path.open()) if r["mode"] == mode]

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) for r in rows])

    chunk, prior = col("chunk_len"), col("chunk_prior")
    decodes, ctx = col("decode_seqs"), col("decode_ctx")
    # Same units as flotilla.enginesim: pairs = chunk_len * (prior + chunk_len), KV read = the
    # decodes' context lengths, the new token included.
    return Steps(rows, chunk, chunk * (prior + chunk), decodes, decodes * ctx, col("median_s"))


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact non-negative least squares: the best unconstrained fit over every set of free terms."""
    best, best_err = np.zeros(a.shape[1]), float(np.sum(b * b))
    for k in range(1, a.shape[1] + 1):
        for free in itertools.combinations(range(a.shape[1]), k):
            x_free = np.linalg.lstsq(a[:, free], b, rcond=None)[0]
            if np.any(x_free < 0):
                continue
            err = float(np.sum((a[:, free] @ x_free - b) ** 2))
            if err < best_err:
                best, best_err = np.zeros(a.shape[1]), err
                best[list(free)] = x_free
    return best


def fit(steps: Steps, knees: range | list[int | None]) -> tuple[np.ndarray, int | None]:
    """Coefficients (TERMS order) and knee minimising the RMS relative error."""
    w = 1.0 / steps.seconds
    best: tuple[float, np.ndarray, int | None] | None = None
    for knee in knees:
        a = steps.design(knee)
        x = nnls(a * w[:, None], np.ones_like(w))
        err = float(np.sqrt(np.mean(((a @ x) * w - 1.0) ** 2)))
        if best is None or err < best[0]:
            best = (err, x, knee)
    assert best is not None
    return best[1], best[2]


def errors(rel: np.ndarray) -> dict[str, float]:
    return {
        "rms_rel": float(np.sqrt(np.mean(rel**2))),
        "mean_abs_rel": float(np.mean(np.abs(rel))),
        "max_abs_rel": float(np.max(np.abs(rel))),
    }


def kv_cache(meta: dict[str, Any]) -> dict[str, int]:
    """vLLM's sizing: utilization x total memory, less weights, peak activations, non-torch memory."""
    mem, shape = meta["memory"], meta["shape"]
    bytes_per_token = shape["layers"] * 2 * shape["kv_heads"] * shape["head_dim"] * 2
    kv_bytes = (
        int(GPU_MEMORY_UTILIZATION * mem["total_bytes"])
        - mem["weights_bytes"]
        - mem["activation_peak_bytes"]
        - mem["non_torch_bytes"]
    )
    blocks = kv_bytes // (BLOCK_SIZE * bytes_per_token)
    return {"kv_bytes": kv_bytes, "bytes_per_token": bytes_per_token, "blocks": blocks}


def build_profile(
    x: np.ndarray, knee: int, meta: dict[str, Any], err: dict[str, float], n: int
) -> StepTimeProfile:
    env = meta["environment"]
    coeffs = dict(zip(TERMS, (float(v) for v in x), strict=True))
    return StepTimeProfile(
        name="h100-llama3-8b",
        model="meta-llama/Llama-3.1-8B (bf16; shape only, random weights)",
        hardware=f"{env['gpu']}, driver {env['nvidia_smi'].split(', ')[1]}, torch {env['torch']}",
        source=(
            f"benchmarks/gpu_calibration: {n} step shapes timed on the GPU (CUDA-graph replay, "
            "medians of 20) with FlashAttention-2 and fused Triton norms/rotary/SiLU, then fitted "
            f"by fit.py; RMS relative error {err['rms_rel']:.1%}, max {err['max_abs_rel']:.1%}. "
            "GPU time only: vLLM's CPU-side scheduling and API overheads are not included."
        ),
        coefficients=StepCoefficients(**coeffs, compute_knee_tokens=knee),
        limits=EngineLimits(
            max_num_seqs=256,
            max_num_batched_tokens=8192,
            block_size=BLOCK_SIZE,
            kv_cache_blocks=kv_cache(meta)["blocks"],
            max_model_len=131072,
        ),
    )


def main() -> None:
    from report import write_plot, write_tables

    meta = json.loads((RESULTS / "meta.json").read_text())
    steps = load_steps(RESULTS / "steps.csv")
    x, knee = fit(steps, KNEES)
    assert knee is not None
    rel = (steps.design(knee) @ x) / steps.seconds - 1.0
    err = errors(rel)
    # The same data through the five linear terms alone, to show what the knee term buys.
    x_lin, _ = fit(steps, [None])
    lin_err = errors((steps.design(None) @ x_lin) / steps.seconds - 1.0)

    profile = build_profile(x, knee, meta, err, len(steps.seconds))
    PROFILE_PATH.write_text(profile.model_dump_json(indent=2) + "\n")
    by_kind = {
        kind: errors(rel[[r["kind"] == kind for r in steps.rows]])
        for kind in sorted({r["kind"] for r in steps.rows})
    }
    summary = {
        "coefficients": dict(zip(TERMS, map(float, x), strict=True)),
        "compute_knee_tokens": knee,
        "error": err,
        "error_by_kind": by_kind,
        "linear_model": {
            "coefficients": dict(zip(TERMS[:5], map(float, x_lin), strict=True)),
            "error": lin_err,
        },
        "kv_cache": kv_cache(meta),
        "rows": len(steps.seconds),
    }
    (RESULTS / "fit.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_tables(RESULTS / "fit.md", steps=steps, rel=rel, summary=summary, meta=meta, profile=profile)
    write_plot(RESULTS / "fit.png", steps, profile)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
