"""The shipped H100 profile loads, is physically sane, and reproduces the committed measurements."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from flotilla.profiles import StepTimeProfile, load_profile, shipped_profiles

RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_calibration" / "results"
# Datasheet peaks of an H100 SXM: no fitted cost may imply a faster chip than this.
H100_HBM_BYTES_S = 3.35e12
H100_BF16_DENSE_FLOPS = 989e12
KV_BYTES_PER_TOKEN = 32 * 2 * 8 * 128 * 2  # layers x (K, V) x KV heads x head dim x bf16
LINEAR_FLOPS_PER_TOKEN = 2 * 32 * (4096 * (4096 + 2 * 1024) + 4096 * 4096 + 3 * 4096 * 14336)


@pytest.fixture(scope="module")
def profile() -> StepTimeProfile:
    return load_profile("h100-llama3-8b")


@pytest.fixture(scope="module")
def fit_summary() -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((RESULTS / "fit.json").read_text())
    return summary


def graph_rows() -> list[dict[str, str]]:
    with (RESULTS / "steps.csv").open() as fh:
        return [r for r in csv.DictReader(fh) if r["mode"] == "graph"]


def predict(profile: StepTimeProfile, row: dict[str, str]) -> float:
    chunk, prior = int(row["chunk_len"]), int(row["chunk_prior"])
    decodes, ctx = int(row["decode_seqs"]), int(row["decode_ctx"])
    return profile.step_time(
        prefill_tokens=chunk,
        prefill_attention_pairs=chunk * (prior + chunk),
        decode_seqs=decodes,
        kv_tokens_read=decodes * ctx,
    )


def test_the_profile_is_shipped_and_says_where_it_came_from(profile: StepTimeProfile) -> None:
    assert "h100-llama3-8b" in shipped_profiles()
    assert "H100" in profile.hardware
    assert "gpu_calibration" in profile.source


def test_coefficients_imply_a_chip_no_faster_than_an_h100(profile: StepTimeProfile) -> None:
    c = profile.coefficients
    weights_read = 16_060_522_496 - 128256 * 4096 * 2  # all weights but the gathered embedding
    # A step cannot beat reading the weights once, yet overheads stay within a few times that.
    assert weights_read / H100_HBM_BYTES_S < c.base_s < 4 * weights_read / H100_HBM_BYTES_S
    assert 1e12 < KV_BYTES_PER_TOKEN / c.kv_token_s < H100_HBM_BYTES_S
    assert min(c.prefill_token_s, c.compute_token_s, c.prefill_attn_s) > 0
    large_step_token_s = c.prefill_token_s + c.compute_token_s
    assert 200e12 < LINEAR_FLOPS_PER_TOKEN / large_step_token_s < H100_BF16_DENSE_FLOPS
    # The knee sits where reading the weights and computing on them take about as long.
    assert 64 <= c.compute_knee_tokens <= 1024


def test_predictions_reproduce_the_committed_measurements(
    profile: StepTimeProfile,
    fit_summary: dict[str, Any],
) -> None:
    rows = graph_rows()
    assert len(rows) == fit_summary["rows"] >= 100
    rel = [predict(profile, r) / float(r["median_s"]) - 1 for r in rows]
    rms = math.sqrt(sum(e * e for e in rel) / len(rel))
    worst = max(abs(e) for e in rel)
    reported = fit_summary["error"]
    assert rms == pytest.approx(reported["rms_rel"], abs=1e-9)
    assert worst == pytest.approx(reported["max_abs_rel"], abs=1e-9)
    # and the reported error itself is small enough to simulate with
    assert rms < 0.05 and worst < 0.15


def test_kv_cache_blocks_follow_vllm_sizing_of_the_measured_memory(profile: StepTimeProfile) -> None:
    mem = json.loads((RESULTS / "meta.json").read_text())["memory"]
    free_for_kv = (
        int(0.9 * mem["total_bytes"])
        - mem["weights_bytes"]
        - mem["activation_peak_bytes"]
        - mem["non_torch_bytes"]
    )
    limits = profile.limits
    assert limits.block_size == 16
    assert limits.kv_cache_blocks == free_for_kv // (16 * KV_BYTES_PER_TOKEN)
    # An 80 GB card less 16 GB of weights holds a few hundred thousand tokens of Llama-3-8B KV.
    assert 400_000 < limits.kv_cache_blocks * 16 < 500_000
    assert limits.max_model_len <= limits.kv_cache_blocks * limits.block_size
