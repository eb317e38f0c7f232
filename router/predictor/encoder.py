"""The shipped encoder, served with numpy alone: the router needs no torch.

It is the computation of `finetune.build_model` (post-LayerNorm BERT layers, tanh GELU, mean pool
over the kept tokens) on weights loaded from an artifact. Batching helps little here (the cost is
per token), so the serving wrapper batches mainly to amortise Python overhead and thread hops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from flotilla.router.predictor import text
from flotilla.router.predictor.weights import dequantize_rows

HIDDEN = 384
N_HEADS = 12
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: np.ndarray = (x - mu) / np.sqrt(var + 1e-12) * w + b
    return out


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))))
    return out


class _Layer:
    def __init__(self, w: Mapping[str, np.ndarray], i: int) -> None:
        def mat(name: str) -> np.ndarray:
            # Stored (out, in); kept transposed and contiguous for x @ W.
            return np.ascontiguousarray(dequantize_rows(w[f"l{i}.{name}_q"], w[f"l{i}.{name}_s"]).T)

        self.qkv, self.ao, self.fi, self.fo = mat("qkv"), mat("ao"), mat("fi"), mat("fo")
        self.qkv_b, self.ao_b = w[f"l{i}.qkv_b"], w[f"l{i}.ao_b"]
        self.fi_b, self.fo_b = w[f"l{i}.fi_b"], w[f"l{i}.fo_b"]
        self.ln1 = (w[f"l{i}.ln1_w"], w[f"l{i}.ln1_b"])
        self.ln2 = (w[f"l{i}.ln2_w"], w[f"l{i}.ln2_b"])

    def __call__(self, x: np.ndarray, bias: np.ndarray) -> np.ndarray:
        # x is (batch * tokens, HIDDEN): the dense products run as one large GEMM each.
        b = bias.shape[0]
        t = x.shape[0] // b
        d = HIDDEN // N_HEADS
        qkv = (x @ self.qkv + self.qkv_b).reshape(b, t, 3, N_HEADS, d).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q * (1.0 / math.sqrt(d))) @ k.transpose(0, 1, 3, 2) + bias
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b * t, HIDDEN)
        x = _layer_norm(x + ctx @ self.ao + self.ao_b, *self.ln1)
        h = _gelu_tanh(x @ self.fi + self.fi_b)
        return _layer_norm(x + h @ self.fo + self.fo_b, *self.ln2)


class NumpyEncoder:
    """Token ids of the full WordPiece vocabulary -> one pooled vector per prompt."""

    def __init__(self, w: Mapping[str, np.ndarray], vocab_size: int, n_layers: int) -> None:
        self.vocab = text.VocabMap(w["vocab_kept"], vocab_size)
        word = dequantize_rows(w["word_q"], w["word_s"])
        if "word_proj" in w:
            word = word @ w["word_proj"]
        self.word = word.astype(np.float32)
        self.pos = np.asarray(w["pos"], dtype=np.float32)
        self.ln = (w["emb_ln_w"], w["emb_ln_b"])
        self.layers = [_Layer(w, i) for i in range(n_layers)]

    @property
    def max_len(self) -> int:
        return int(self.pos.shape[0])

    def __call__(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled vectors in input order. Sequences are grouped by length so that padding (pure
        waste: the cost is per token) stays small when short and long prompts share a batch."""
        if not seqs:
            return np.zeros((0, HIDDEN), dtype=np.float32)
        longest = max(len(s) for s in seqs)
        if longest > self.max_len:
            raise ValueError(f"sequence of {longest} ids is longer than the encoder's {self.max_len}")
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = np.empty((len(seqs), HIDDEN), dtype=np.float32)
        start = 0
        while start < len(order):
            # Extend the group while padding everything to its longest member wastes < 25%.
            end = start + 1
            while end < len(order) and len(seqs[order[end]]) * (end + 1 - start) <= 1.25 * sum(
                len(seqs[i]) for i in order[start : end + 1]
            ):
                end += 1
            group = order[start:end]
            out[group] = self._pooled([seqs[i] for i in group])
            start = end
        return out

    def _pooled(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        ids, mask = text.pad_batch(seqs)
        b, t = ids.shape
        x = _layer_norm(self.word[self.vocab(ids)] + self.pos[:t], *self.ln).reshape(b * t, HIDDEN)
        bias = ((1.0 - mask) * -1e4)[:, None, None, :].astype(np.float32)
        for layer in self.layers:
            x = layer(x, bias)
        pooled: np.ndarray = (x.reshape(b, t, HIDDEN) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled
