"""What the router learns from: each finished request's head input next to its real output length.

Kept in memory, a bounded ring per serving model (the newest traffic matters most and the router
must not grow without bound); saved to and loaded from a compressed .npz so that `flotilla predictor
refit` can run on a log the router dumped. Saving is blocking file I/O: the router calls it through
`asyncio.to_thread`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    features: np.ndarray
    output_tokens: int
    finished_at: float


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """Rows in finishing order (oldest first)."""

    features: np.ndarray
    output_tokens: np.ndarray
    finished_at: np.ndarray

    def __len__(self) -> int:
        return len(self.output_tokens)


class FeatureLog:
    def __init__(self, capacity_per_model: int = 50_000) -> None:
        self.capacity = capacity_per_model
        self._rows: dict[str, deque[LoggedRequest]] = {}

    def record(self, model: str, features: np.ndarray, output_tokens: int, finished_at: float) -> None:
        if output_tokens < 0:
            raise ValueError("output_tokens must be >= 0")
        rows = self._rows.setdefault(model, deque(maxlen=self.capacity))
        rows.append(LoggedRequest(np.asarray(features, dtype=np.float32), int(output_tokens), finished_at))

    def models(self) -> list[str]:
        return sorted(self._rows)

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def snapshot(self, model: str) -> LogSnapshot:
        rows = sorted(self._rows.get(model, ()), key=lambda r: r.finished_at)
        if not rows:
            return LogSnapshot(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0))
        return LogSnapshot(
            np.stack([r.features for r in rows]),
            np.array([r.output_tokens for r in rows], dtype=np.int64),
            np.array([r.finished_at for r in rows], dtype=float),
        )

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for i, model in enumerate(self.models()):
            snap = self.snapshot(model)
            arrays[f"m{i}_name"] = np.array(model)
            arrays[f"m{i}_features"] = snap.features
            arrays[f"m{i}_output_tokens"] = snap.output_tokens
            arrays[f"m{i}_finished_at"] = snap.finished_at
        tmp = path.with_suffix(".tmp.npz")
        _savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, capacity_per_model: int = 50_000) -> FeatureLog:
        log = cls(capacity_per_model)
        with np.load(path) as npz:
            i = 0
            while f"m{i}_name" in npz.files:
                model = str(npz[f"m{i}_name"])
                for z, n, t in zip(
                    npz[f"m{i}_features"], npz[f"m{i}_output_tokens"], npz[f"m{i}_finished_at"], strict=True
                ):
                    log.record(model, z, int(n), float(t))
                i += 1
        return log


def _savez(path: Path, **arrays: np.ndarray) -> None:
    # numpy's stub types **kwds as if they could only be `allow_pickle`.
    save: Any = np.savez_compressed
    save(path, **arrays)
