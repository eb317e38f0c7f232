"""The three fused element-wise kernels vLLM runs around its matrix products, in Triton.

vLLM ships CUDA kernels for these (fused_add_rms_norm, rotary_embedding, silu_and_mul) and fuses
them further with torch.compile. Written as plain PyTorch they take about 30 launches a layer
instead of about 10, which at small batches adds a few milliseconds to every step, a cost vLLM
does not pay. One program per row keeps them simple: each row is a few KiB.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(x_ptr, res_ptr, w_ptr, n_cols, eps, BLOCK: tl.constexpr):  # noqa: PLR0917
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(res_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    r = r + x
    tl.store(res_ptr + row * n_cols + cols, r.to(tl.bfloat16), mask=mask)
    inv = tl.rsqrt(tl.sum(r * r, axis=0) / n_cols + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(x_ptr + row * n_cols + cols, (r * inv * w).to(tl.bfloat16), mask=mask)


def add_rms_norm_(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> None:
    """In place: residual += x; x = rms_norm(residual) * weight. Both [T, H], contiguous."""
    t, h = x.shape
    _add_rms_norm_kernel[(t,)](x, residual, weight, h, eps, BLOCK=triton.next_power_of_2(h))


@triton.jit
def _rope_kernel(qkv_ptr, pos_ptr, cos_ptr, sin_ptr, row_stride, HALF: tl.constexpr):  # noqa: PLR0917
    tok = tl.program_id(0)
    head = tl.program_id(1)
    i = tl.arange(0, HALF)
    pos = tl.load(pos_ptr + tok)
    c = tl.load(cos_ptr + pos * HALF + i).to(tl.float32)
    s = tl.load(sin_ptr + pos * HALF + i).to(tl.float32)
    base = qkv_ptr + tok * row_stride + head * 2 * HALF
    x1 = tl.load(base + i).to(tl.float32)
    x2 = tl.load(base + HALF + i).to(tl.float32)
    tl.store(base + i, (x1 * c - x2 * s).to(tl.bfloat16))
    tl.store(base + HALF + i, (x2 * c + x1 * s).to(tl.bfloat16))


def rope_(
    qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int
) -> None:
    """Neox-style rotary embedding, in place, on the first `heads` heads of each row of qkv [T, *]."""
    half = cos.shape[1]
    _rope_kernel[(qkv.shape[0], heads)](qkv, positions, cos, sin, qkv.stride(0), HALF=half)


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    gate = tl.load(x_ptr + row * 2 * n + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * 2 * n + n + cols, mask=mask, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + row * n + cols, out.to(tl.bfloat16), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """[T, 2n] (gate then up) -> silu(gate) * up, [T, n]."""
    t, two_n = x.shape
    n = two_n // 2
    out = torch.empty(t, n, device=x.device, dtype=x.dtype)
    block = 1024
    _silu_mul_kernel[(t, triton.cdiv(n, block))](x, out, n, BLOCK=block)
    return out


def kernel_errors(seed: int = 11) -> dict[str, float]:
    """Relative error of each kernel against its float32 PyTorch definition, on fresh random data."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)

    def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
        return float((out.float() - ref).norm() / ref.norm())

    errs = {}
    x, res, w = rand(37, 4096), rand(37, 4096), rand(4096)
    ref_res = res.float() + x.float()
    ref = ref_res * torch.rsqrt(ref_res.pow(2).mean(-1, keepdim=True) + 1e-5) * w.float()
    add_rms_norm_(x, res, w)
    errs["add_rms_norm"] = max(rel(x, ref), rel(res, ref_res))

    qkv, pos = rand(29, 6144), torch.randint(0, 4000, (29,), device="cuda", generator=g)
    ang = torch.rand(4000, 64, device="cuda", generator=g) * 6.28
    cos, sin = ang.cos().to(torch.bfloat16), ang.sin().to(torch.bfloat16)
    heads = qkv[:, :5120].float().view(29, 40, 128)
    c, s = cos[pos].float()[:, None], sin[pos].float()[:, None]
    x1, x2 = heads[..., :64], heads[..., 64:]
    ref = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), -1)
    untouched = qkv[:, 5120:].clone()
    rope_(qkv, pos, cos, sin, heads=40)
    errs["rope"] = rel(qkv[:, :5120].view(29, 40, 128), ref)
    errs["rope_untouched_v"] = float((qkv[:, 5120:] != untouched).sum())

    gu = rand(23, 2 * 14336)
    gate, up = gu.float().chunk(2, -1)
    errs["silu_and_mul"] = rel(silu_and_mul(gu), torch.nn.functional.silu(gate) * up)
    return errs
