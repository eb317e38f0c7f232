"""A side check (not part of what ships): does a nearest-neighbour head beat the linear one?

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/predictor/knn_head_check.py

For each shipped artifact: the pooled encoder vectors of the fit prompts are the neighbours; a
prompt's kNN score is the similarity-weighted mean log length of its k nearest (softmax over cosine
similarity / temp), mixed with the linear head's score (weight a, both standardised). k, temp and a
are chosen on the calibration prompts, then held-out tau is printed. Result (2026-11-22): 0.442
(Llama) and 0.440 (Mistral, which chose a = 0) against 0.440/0.440 for the linear head alone.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from flotilla.predictor_training import data
from flotilla.predictor_training.evaluate import features_of
from flotilla.router.predictor import metrics
from flotilla.router.predictor.predictor import LearnedPredictor


def _unit(z: np.ndarray) -> np.ndarray:
    e = z[:, :384]  # the pooled encoder part of the head's input
    out: np.ndarray = e / np.linalg.norm(e, axis=1, keepdims=True)
    return out


def _std(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x - ref.mean()) / ref.std()
    return out


def check(ref: str, model: str) -> None:
    pred = LearnedPredictor.load(ref)
    parts = data.split_records(data.load_castillo(data.model_path(model)))
    fit, cal, held = parts[data.Part.FIT], parts[data.Part.CALIBRATE], parts[data.Part.HELDOUT]

    def embed(rs: list[data.PromptRecord]) -> np.ndarray:
        return np.concatenate([pred.embed(features_of(rs[i : i + 64])) for i in range(0, len(rs), 64)])

    with threadpool_limits(1, "blas"):
        zf, zc, zh = embed(fit), embed(cal), embed(held)
    neighbours, y = _unit(zf), np.log([r.mean_output for r in fit])
    cal_one, _ = data.sampled_truth(cal, seed=1)
    one, _ = data.sampled_truth(held)

    def knn(z: np.ndarray, k: int, temp: float) -> np.ndarray:
        sim = _unit(z) @ neighbours.T
        idx = np.argpartition(-sim, k, axis=1)[:, :k]
        w = np.exp(np.take_along_axis(sim, idx, 1) / temp)
        out: np.ndarray = (w / w.sum(1, keepdims=True) * y[idx]).sum(1)
        return out

    lc, lh = pred.score_embedded(zc), pred.score_embedded(zh)
    base_c, base_h = metrics.batched_tau(lc, cal_one), metrics.batched_tau(lh, one)
    print(f"{model}: linear head, calibrate {base_c:.3f}, held-out {base_h:.3f}")
    best: tuple[float, int, float, float, float] | None = None
    for k in (8, 16, 32, 64):
        for temp in (0.02, 0.05, 0.1):
            kc, kh = knn(zc, k, temp), knn(zh, k, temp)
            for a in (0.0, 0.25, 0.5, 0.75):
                tc = metrics.batched_tau((1 - a) * _std(lc, lc) + a * _std(kc, kc), cal_one, repeats=5)
                if best is None or tc > best[0]:
                    th = metrics.batched_tau((1 - a) * _std(lh, lc) + a * _std(kh, kc), one)
                    best = (tc, k, temp, a, th)
    assert best is not None
    tc, k, temp, a, th = best
    print(f"{model}: chosen on calibrate ({tc:.3f}): k {k}, temp {temp:g}, a {a:.2f} -> held-out {th:.3f}")


if __name__ == "__main__":
    check("llama-3.1-8b-v1", "llama-3.1-8b")
    check("mistral-7b-v1", "mistral-7b")
