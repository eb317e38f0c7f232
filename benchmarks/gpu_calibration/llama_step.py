"""One continuous-batching step of a Llama-3.1-8B-shaped decoder, as vLLM runs it on a GPU.

Timing does not depend on weight values, so the weights are random; what matters is that every
matrix has the real shape and every step moves the real bytes. A step holds (like vLLM's chunked
prefill) at most one prefill chunk of `chunk_len` new tokens over `chunk_prior` cached tokens, plus
`decode_seqs` decodes of one token each over `decode_ctx` cached tokens (the new one included).

Norms, rotary embedding and the gated activation are fused Triton kernels (fused_ops.py), as
vLLM fuses them. Attention goes through FlashAttention-2 as PyTorch ships it
(`aten._flash_attention_forward`): grouped-query heads natively, split-KV for decodes, causal
masks aligned bottom-right as chunked prefill needs. vLLM on Hopper runs FlashAttention-3 over a
paged cache; PyTorch has no paged API, so each sequence's KV is contiguous here (README.md says
what that changes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fused_ops import add_rms_norm_, rope_, silu_and_mul


@dataclass(frozen=True)
class LlamaShape:
    """Llama-3.1-8B's config.json sizes."""

    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    intermediate: int = 14336
    vocab: int = 128256
    rope_theta: float = 500000.0
    max_pos: int = 16384

    @property
    def kv_bytes_per_token_layer(self) -> int:
        return 2 * self.kv_heads * self.head_dim * 2  # K and V, bf16

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * self.kv_bytes_per_token_layer


@dataclass(frozen=True)
class StepShape:
    chunk_len: int = 0
    chunk_prior: int = 0
    decode_seqs: int = 0
    decode_ctx: int = 0

    @property
    def tokens(self) -> int:
        return self.chunk_len + self.decode_seqs

    def kv_tokens_per_layer(self) -> int:
        """Cache tokens one layer's attention needs (chunk context plus every decode context)."""
        chunk = self.chunk_prior + self.chunk_len if self.chunk_len else 0
        return chunk + self.decode_seqs * self.decode_ctx


def _rand(shape: tuple[int, ...], std: float, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen).mul_(std)


class LlamaWeights:
    """Random bf16 weights in vLLM's fused layouts (qkv in one matrix, gate and up in one)."""

    def __init__(self, shape: LlamaShape, seed: int = 0) -> None:
        s = shape
        g = torch.Generator(device="cuda").manual_seed(seed)
        qkv_out = (s.heads + 2 * s.kv_heads) * s.head_dim
        self.embed = _rand((s.vocab, s.hidden), 0.02, g)
        self.lm_head = _rand((s.vocab, s.hidden), 0.02, g)
        self.final_norm = torch.ones(s.hidden, device="cuda", dtype=torch.bfloat16)
        self.layers = [
            {
                "in_norm": torch.ones(s.hidden, device="cuda", dtype=torch.bfloat16),
                "post_norm": torch.ones(s.hidden, device="cuda", dtype=torch.bfloat16),
                "qkv": _rand((qkv_out, s.hidden), 1 / math.sqrt(s.hidden), g),
                "o": _rand((s.hidden, s.heads * s.head_dim), 1 / math.sqrt(s.hidden), g),
                "gate_up": _rand((2 * s.intermediate, s.hidden), 1 / math.sqrt(s.hidden), g),
                "down": _rand((s.hidden, s.intermediate), 1 / math.sqrt(s.intermediate), g),
            }
            for _ in range(s.layers)
        ]
        inv_freq = 1.0 / (
            s.rope_theta ** (torch.arange(0, s.head_dim, 2, device="cuda").float() / s.head_dim)
        )
        angles = torch.outer(torch.arange(s.max_pos, device="cuda").float(), inv_freq)
        self.cos = angles.cos().to(torch.bfloat16)
        self.sin = angles.sin().to(torch.bfloat16)

    def nbytes(self) -> int:
        tensors = [self.embed, self.lm_head, self.final_norm]
        tensors += [t for layer in self.layers for t in layer.values()]
        return sum(t.numel() * t.element_size() for t in tensors)


def flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """FlashAttention-2 (dense batch): q [B, Lq, H, D], k/v [B, Lk, Hkv, D] -> [B, Lq, H, D]."""
    out = torch.ops.aten._flash_attention_forward(
        q, k, v, None, None, q.shape[1], k.shape[1], 0.0, causal, False, scale=q.shape[-1] ** -0.5
    )
    return out[0]


class KVPool:
    """One big random bf16 buffer that per-layer caches are carved from.

    When a step's cache does not fit 32 times, layers share buffers round-robin. That is only done
    when one layer's cache is far larger than L2, so a layer never finds the previous reader's
    bytes still cached, and every layer still pulls its whole cache from HBM.
    """

    def __init__(self, nbytes: int, l2_bytes: int, seed: int = 1) -> None:
        g = torch.Generator(device="cuda").manual_seed(seed)
        self.buf = torch.randn(nbytes // 2, device="cuda", dtype=torch.bfloat16, generator=g)
        self.l2_bytes = l2_bytes

    def layer_caches(self, shape: LlamaShape, step: StepShape) -> tuple[list[dict[str, torch.Tensor]], int]:
        """Per-layer K/V views for `step` and how many distinct buffers back them."""
        per_token = shape.kv_heads * shape.head_dim
        need = step.kv_tokens_per_layer() * per_token * 2  # elements for K and V
        distinct = min(shape.layers, self.buf.numel() // need)
        if distinct < 1:
            raise MemoryError(f"one layer's cache ({need * 2} B) exceeds the pool")
        if distinct < shape.layers and need * 2 < 10 * self.l2_bytes:
            raise MemoryError("layers would share a cache small enough to stay in L2")
        views = []
        for i in range(distinct):
            base = i * need
            cache: dict[str, torch.Tensor] = {}
            off = base
            for name, (b, n) in {
                "chunk": (1, step.chunk_prior + step.chunk_len if step.chunk_len else 0),
                "decode": (step.decode_seqs, step.decode_ctx),
            }.items():
                count = b * n * per_token
                if count:
                    kv_shape = (b, n, shape.kv_heads, shape.head_dim)
                    cache[name + "_k"] = self.buf[off : off + count].view(kv_shape)
                    cache[name + "_v"] = self.buf[off + count : off + 2 * count].view(kv_shape)
                    off += 2 * count
            views.append(cache)
        return [views[i % distinct] for i in range(shape.layers)], distinct


class LlamaStep:
    """A callable step with static inputs, so it can be replayed eagerly or from a CUDA graph."""

    def __init__(
        self, w: LlamaWeights, shape: LlamaShape, step: StepShape, caches: list[dict[str, torch.Tensor]]
    ) -> None:
        self.w, self.s, self.step, self.caches = w, shape, step, caches
        t = step.tokens
        g = torch.Generator(device="cuda").manual_seed(2)
        self.ids = torch.randint(0, shape.vocab, (t,), device="cuda", generator=g)
        pos = [step.chunk_prior + i for i in range(step.chunk_len)]
        pos += [step.decode_ctx - 1] * step.decode_seqs
        self.positions = torch.tensor(pos, device="cuda", dtype=torch.long)
        # Rows that sample a token: the chunk's last and every decode.
        sample = [step.chunk_len - 1] if step.chunk_len else []
        sample += list(range(step.chunk_len, t))
        self.sample_rows = torch.tensor(sample, device="cuda", dtype=torch.long)
        self.out_ids: torch.Tensor | None = None

    def _attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        st, outs = self.step, []
        n = st.chunk_len
        if n:
            end = st.chunk_prior + n
            # Write the chunk's K/V into its cache (vLLM's reshape_and_cache), then attend.
            cache["chunk_k"][0, st.chunk_prior : end].copy_(k[:n])
            cache["chunk_v"][0, st.chunk_prior : end].copy_(v[:n])
            outs.append(flash(q[None, :n], cache["chunk_k"], cache["chunk_v"], causal=True)[0])
        if st.decode_seqs:
            cache["decode_k"][:, st.decode_ctx - 1].copy_(k[n:])
            cache["decode_v"][:, st.decode_ctx - 1].copy_(v[n:])
            o = flash(q[n:, None], cache["decode_k"], cache["decode_v"], causal=False)
            outs.append(o[:, 0])
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.reshape(out.shape[0], -1)

    def __call__(self) -> torch.Tensor:
        s, w = self.s, self.w
        t = self.step.tokens
        q_end = s.heads * s.head_dim
        k_end = q_end + s.kv_heads * s.head_dim
        h = w.embed[self.ids]
        residual = torch.zeros_like(h)
        for layer, cache in zip(w.layers, self.caches, strict=True):
            add_rms_norm_(h, residual, layer["in_norm"])
            qkv = F.linear(h, layer["qkv"])
            rope_(qkv, self.positions, w.cos, w.sin, heads=s.heads + s.kv_heads)
            q = qkv[:, :q_end].view(t, s.heads, s.head_dim)
            k = qkv[:, q_end:k_end].view(t, s.kv_heads, s.head_dim)
            v = qkv[:, k_end:].view(t, s.kv_heads, s.head_dim)
            h = F.linear(self._attention(q, k, v, cache), layer["o"])
            add_rms_norm_(h, residual, layer["post_norm"])
            h = F.linear(silu_and_mul(F.linear(h, layer["gate_up"])), layer["down"])
        add_rms_norm_(h, residual, w.final_norm)
        logits = F.linear(h[self.sample_rows], w.lm_head)
        self.out_ids = logits.argmax(dim=-1)
        return self.out_ids
