"""From a ranking score to token counts: p50 and p90 of the output length, calibrated.

A ranker's score has no unit. Load and KV-memory estimates need tokens, so the score is mapped to
length quantiles measured on prompts the encoder was not fitted on: prompts are binned by score
and each bin keeps the empirical quantiles of all sampled lengths of its prompts (all ten samples
per prompt: the spread within a prompt is part of what p90 must cover). Quantiles are made
monotone in the score and interpolated between bin centres.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

QUANTILES = (0.5, 0.9)


class LengthCalibration(BaseModel):
    """Score bin centres and, per quantile, the length at each centre (non-decreasing)."""

    model_config = ConfigDict(extra="forbid")

    centers: list[float]
    quantiles: dict[str, list[float]]

    @classmethod
    def fit(cls, scores: np.ndarray, lengths: Sequence[Sequence[int]], n_bins: int = 8) -> LengthCalibration:
        scores = np.asarray(scores, dtype=float)
        if len(scores) < n_bins:
            raise ValueError(f"need at least {n_bins} prompts to calibrate, got {len(scores)}")
        edges = np.quantile(scores, np.linspace(0, 1, n_bins + 1))
        which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
        centers = []
        table: dict[str, list[float]] = {f"p{round(q * 100)}": [] for q in QUANTILES}
        for b in range(n_bins):
            members = np.flatnonzero(which == b)
            if len(members) == 0:
                continue
            pooled = np.concatenate([np.asarray(lengths[i], dtype=float) for i in members.tolist()])
            centers.append(float(np.median(scores[members])))
            for q in QUANTILES:
                table[f"p{round(q * 100)}"].append(float(np.quantile(pooled, q)))
        for key, values in table.items():
            table[key] = np.maximum.accumulate(values).tolist()
        return cls(centers=centers, quantiles=table)

    def predict(self, scores: np.ndarray, max_tokens: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Quantiles per score, capped by each request's max_tokens where given (<= 0 = none)."""
        out = {}
        for key, values in self.quantiles.items():
            est = np.interp(np.asarray(scores, dtype=float), self.centers, values)
            if max_tokens is not None:
                cap = np.asarray(max_tokens, dtype=float)
                est = np.where(cap > 0, np.minimum(est, cap), est)
            out[key] = est
        return out
