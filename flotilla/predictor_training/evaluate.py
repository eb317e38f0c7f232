"""Offline evaluation of a shipped predictor on held-out prompts, and of its CPU cost.

Everything here runs the serving path (tokenizer + numpy encoder + head), not the training
framework, so the numbers are those of what the router runs. Truth is one sampled length per
prompt (what a real request produces), with the prompt's mean length alongside.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from flotilla.predictor_training.data import PromptRecord, sampled_truth
from flotilla.router.predictor import metrics
from flotilla.router.predictor.calibration import LengthCalibration
from flotilla.router.predictor.predictor import LearnedPredictor
from flotilla.router.predictor.text import PredictorInput


def features_of(records: Sequence[PromptRecord]) -> list[PredictorInput]:
    return [PredictorInput(text=r.text, prompt_tokens=r.input_tokens) for r in records]


def baseline_rows(held: Sequence[PromptRecord], calibrate: Sequence[PromptRecord]) -> dict[str, Any]:
    """Noise ceiling and the prompt-length heuristic (with its own calibration, for p50/p90)."""
    one, rest = sampled_truth(held)
    ds = [r.dataset for r in held]
    length = np.log1p([r.input_tokens for r in held])
    cal = LengthCalibration.fit(
        np.log1p([r.input_tokens for r in calibrate]), [r.output_sizes for r in calibrate]
    )
    return {
        "ceiling": metrics.tau_by_group(rest, one, ds),
        "prompt-length": metrics.tau_by_group(length, one, ds),
        "prompt-length coverage": coverage_by_group(cal.predict(length), one, ds),
    }


def coverage_by_group(
    q: dict[str, np.ndarray], truth: np.ndarray, groups: Sequence[str]
) -> dict[str, dict[str, float]]:
    labels = np.asarray(groups)
    out = {}
    for g in ["all", *sorted(set(groups))]:
        mask = np.ones(len(labels), bool) if g == "all" else labels == g
        out[g] = {key: metrics.coverage(v[mask], truth[mask]) for key, v in q.items()}
    return out


def evaluate_predictor(predictor: LearnedPredictor, held: Sequence[PromptRecord]) -> dict[str, Any]:
    one, _ = sampled_truth(held)
    mean = np.array([r.mean_output for r in held])
    ds = [r.dataset for r in held]
    preds = []
    for start in range(0, len(held), 64):
        preds += predictor.predict(features_of(held[start : start + 64]))
    score = np.array([p.score for p in preds])
    q = {"p50": np.array([p.p50 for p in preds]), "p90": np.array([p.p90 for p in preds])}
    return {
        "tau_sample": metrics.tau_by_group(score, one, ds),
        "tau_mean": metrics.tau_by_group(score, mean, ds),
        "coverage": coverage_by_group(q, one, ds),
        "p50_abs_err_median": float(np.median(np.abs(q["p50"] - one))),
    }


def measure_latency(
    predictor: LearnedPredictor, records: Sequence[PromptRecord], n: int = 200, batch: int = 32
) -> dict[str, float]:
    """CPU time per request (process CPU time, all threads: what this request costs the router, unaffected by
    other processes on this shared machine) and wall time, unbatched and in batches of `batch`."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return _measure(predictor, features_of(records[:n]), batch)
    with threadpool_limits(limits=1, user_api="blas"):  # as BatchingPredictor runs it
        return _measure(predictor, features_of(records[:n]), batch)


def _measure(predictor: LearnedPredictor, feats: list[PredictorInput], batch: int) -> dict[str, float]:
    predictor.predict(feats[:batch])  # warm-up: first BLAS calls, allocator
    one_cpu, one_wall = [], []
    for f in feats:
        c, w = time.process_time(), time.perf_counter()
        predictor.predict([f])
        one_cpu.append(time.process_time() - c)
        one_wall.append(time.perf_counter() - w)
    b_cpu, b_wall = [], []
    for start in range(0, len(feats) - batch + 1, batch):
        chunk = feats[start : start + batch]
        c, w = time.process_time(), time.perf_counter()
        predictor.predict(chunk)
        b_cpu.append((time.process_time() - c) / len(chunk))
        b_wall.append(time.perf_counter() - w)
    ms = 1e3
    return {
        "unbatched_cpu_p50_ms": float(np.percentile(one_cpu, 50) * ms),
        "unbatched_cpu_p99_ms": float(np.percentile(one_cpu, 99) * ms),
        "unbatched_wall_p50_ms": float(np.percentile(one_wall, 50) * ms),
        "unbatched_wall_p99_ms": float(np.percentile(one_wall, 99) * ms),
        f"batch{batch}_cpu_per_request_p50_ms": float(np.percentile(b_cpu, 50) * ms),
        f"batch{batch}_cpu_per_request_p99_ms": float(np.percentile(b_cpu, 99) * ms),
        f"batch{batch}_wall_p50_ms": float(np.percentile(b_wall, 50) * ms),
        f"batch{batch}_wall_p99_ms": float(np.percentile(b_wall, 99) * ms),
    }
