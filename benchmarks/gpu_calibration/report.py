"""Tables and the plot that fit.py writes: what the fitted coefficients mean in hardware terms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fit import Steps

from flotilla.profiles import StepTimeProfile


def _linear_flops_per_token(shape: dict[str, int]) -> float:
    """Multiply-adds of the decoder's matrix products for one token (the LM head runs per sample)."""
    h, kv = shape["hidden"], shape["kv_heads"] * shape["head_dim"]
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * shape["intermediate"]
    return 2.0 * shape["layers"] * per_layer


def _weights_read(meta: dict[str, Any]) -> int:
    """Bytes a decode step must read: all weights but the embedding table, which is only gathered."""
    shape = meta["shape"]
    return int(meta["memory"]["weights_bytes"]) - int(shape["vocab"]) * int(shape["hidden"]) * 2


def decode_floor_table(steps: Steps, meta: dict[str, Any]) -> list[str]:
    bw = meta["ceilings"]["hbm_read_tbps"] * 1e12
    kv_bytes = meta["shape"]["layers"] * 2 * meta["shape"]["kv_heads"] * meta["shape"]["head_dim"] * 2
    cells: dict[tuple[int, int], str] = {}
    for r, t in zip(steps.rows, steps.seconds, strict=True):
        if r["kind"] != "decode":
            continue
        d, c = int(r["decode_seqs"]), int(r["decode_ctx"])
        floor = (_weights_read(meta) + d * c * kv_bytes) / bw
        cells[(d, c)] = f"{t * 1e3:.1f} ({t / floor:.2f}x)"
    batches = sorted({d for d, _ in cells})
    ctxs = sorted({c for _, c in cells})
    lines = ["| batch \\ context | " + " | ".join(str(c) for c in ctxs) + " |"]
    lines.append("|---:|" + "---:|" * len(ctxs))
    lines += [f"| {d} | " + " | ".join(cells[(d, c)] for c in ctxs) + " |" for d in batches]
    return lines


# Published vLLM figures for Llama-3-8B on one H100, and the steps they correspond to.
V1_BLOG = "https://blog.vllm.ai/2025/01/27/v1-alpha-release.html"
LAMBDA = (
    "https://github.com/LambdaLabsML/vllm-benchmark/blob/main/results/prompt_10/1xH100-80GB-SXM/"
    "Meta-Llama-3-8B-Instruct_tp1_len2048.json"
)
LAMBDA_PROMPTS = [13, 25, 27, 10, 329, 29, 399, 328, 4, 205]  # that file's input_lens
LAMBDA_TPOT_MS, LAMBDA_ITL_MS, LAMBDA_TTFT_MS = 7.558, 72.30, 62.43  # its medians and mean TTFT


def published_comparison(profile: StepTimeProfile) -> list[str]:
    """Model predictions next to published end-to-end vLLM numbers (which add CPU-side overheads)."""
    one = profile.step_time(decode_seqs=1, kv_tokens_read=512) * 1e3
    ten = [profile.step_time(decode_seqs=10, kv_tokens_read=10 * c) * 1e3 for c in (128, 1024)]
    itl_step = LAMBDA_ITL_MS / 10
    ttft = (
        profile.step_time(
            prefill_tokens=sum(LAMBDA_PROMPTS), prefill_attention_pairs=sum(n * n for n in LAMBDA_PROMPTS)
        )
        * 1e3
    )
    return [
        "| published (vLLM, Llama-3-8B, 1 H100) | value | this model | model / published |",
        "|---|---:|---:|---:|",
        f"| GPU time of a small-batch step, 'as low as ~5 ms' ([vLLM V1 blog]({V1_BLOG})) | ~5 ms | "
        f"{one:.2f} ms (1 sequence, 512 context) | {one / 5:.2f} |",
        "| median TPOT, 10 concurrent chat requests of 4-399 prompt tokens "
        f"([LambdaLabsML]({LAMBDA})) | {LAMBDA_TPOT_MS} ms | "
        f"{ten[0]:.2f}-{ten[1]:.2f} ms (10 decodes, 128-1024 context) | "
        f"{ten[0] / LAMBDA_TPOT_MS:.2f}-{ten[1] / LAMBDA_TPOT_MS:.2f} |",
        f"| same run, median ITL / 10 (multi-step bursts of 10 tokens) | {itl_step:.2f} ms | "
        f"{ten[0]:.2f}-{ten[1]:.2f} ms | {ten[0] / itl_step:.2f}-{ten[1] / itl_step:.2f} |",
        f"| same run, mean TTFT (10 prompts, {sum(LAMBDA_PROMPTS)} tokens, arriving together) | "
        f"{LAMBDA_TTFT_MS} ms | {ttft:.1f} ms (one prefill step of all ten) | {ttft / LAMBDA_TTFT_MS:.2f} |",
    ]


def write_tables(
    path: Path,
    *,
    steps: Steps,
    rel: np.ndarray,
    summary: dict[str, Any],
    meta: dict[str, Any],
    profile: StepTimeProfile,
) -> None:
    c, ceil, shape = profile.coefficients, meta["ceilings"], meta["shape"]
    kv_bytes = summary["kv_cache"]["bytes_per_token"]
    floor_ms = _weights_read(meta) / (ceil["hbm_read_tbps"] * 1e12) * 1e3
    big_token_s = c.prefill_token_s + c.compute_token_s
    e, lin = summary["error"], summary["linear_model"]["error"]
    out = [
        "# GPU calibration: fitted coefficients (written by fit.py)",
        "",
        f"{summary['rows']} step shapes, CUDA-graph replay, medians of 20. Ceilings on the same GPU: "
        f"bf16 matmul {ceil['bf16_matmul_tflops']:.0f} TFLOP/s (8192^3), HBM {ceil['hbm_read_tbps']:.2f} "
        f"TB/s read-only (sum of 2 GiB), {ceil['hbm_copy_tbps']:.2f} TB/s copy (read + write).",
        "",
        "| term | value | what it means |",
        "|---|---:|---|",
        f"| base_s | {c.base_s * 1e3:.3f} ms | weights-read floor at the measured bandwidth is "
        f"{floor_ms:.2f} ms: {c.base_s * 1e3 / floor_ms:.2f}x |",
        f"| prefill_token_s | {c.prefill_token_s * 1e6:.2f} us | per chunk token from the first one |",
        f"| compute_token_s | {c.compute_token_s * 1e6:.2f} us | per token past the knee; with the "
        f"term above, {_linear_flops_per_token(shape) / big_token_s / 1e12:.0f} TFLOP/s of matmul "
        f"({_linear_flops_per_token(shape) / big_token_s / 1e12 / ceil['bf16_matmul_tflops']:.0%} of "
        "the ceiling) |",
        f"| compute_knee_tokens | {c.compute_knee_tokens} | tokens a step holds before the matrix "
        "products turn compute-bound |",
        f"| prefill_attn_s | {c.prefill_attn_s * 1e9:.3f} ns | per chunk_len x (prior + chunk_len) pair |",
        f"| decode_seq_s | {c.decode_seq_s * 1e6:.2f} us | per decode (sampling, cache write, small GEMM"
        " growth) |",
        f"| kv_token_s | {c.kv_token_s * 1e9:.2f} ns | per cached token a decode reads: "
        f"{kv_bytes / c.kv_token_s / 1e12:.2f} TB/s effective "
        f"({kv_bytes / c.kv_token_s / 1e12 / ceil['hbm_read_tbps']:.0%} of the read ceiling) |",
        "",
        f"Fit error (relative): RMS {e['rms_rel']:.1%}, mean {e['mean_abs_rel']:.1%}, max "
        f"{e['max_abs_rel']:.1%}. The five linear terms alone: RMS {lin['rms_rel']:.1%}, max "
        f"{lin['max_abs_rel']:.1%}.",
        "",
        "| kind | rows | RMS | max |",
        "|---|---:|---:|---:|",
    ]
    for kind, ke in summary["error_by_kind"].items():
        n = sum(r["kind"] == kind for r in steps.rows)
        out.append(f"| {kind} | {n} | {ke['rms_rel']:.1%} | {ke['max_abs_rel']:.1%} |")
    worst = np.argsort(-np.abs(rel))[:5]
    out += ["", "Worst rows:", "", "| kind | chunk | prior | decodes | context | ms | model error |"]
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for i in worst:
        r = steps.rows[i]
        out.append(
            f"| {r['kind']} | {r['chunk_len']} | {r['chunk_prior']} | {r['decode_seqs']} | "
            f"{r['decode_ctx']} | {steps.seconds[i] * 1e3:.2f} | {rel[i]:+.1%} |"
        )
    out += ["", "Decode steps: ms (and x the bandwidth floor: weights + KV read / read ceiling):", ""]
    out += decode_floor_table(steps, meta)
    kv = summary["kv_cache"]
    mem = meta["memory"]
    out += [
        "",
        "KV cache for vLLM at gpu_memory_utilization 0.9: "
        f"0.9 x {mem['total_bytes'] / 2**30:.2f} GiB - weights {mem['weights_bytes'] / 2**30:.2f} GiB - "
        f"peak activations of an 8192-token step {mem['activation_peak_bytes'] / 2**30:.2f} GiB - "
        f"non-torch {mem['non_torch_bytes'] / 2**30:.2f} GiB = {kv['kv_bytes'] / 2**30:.2f} GiB; "
        f"/ {kv['bytes_per_token']} B per token (32 layers x K,V x 8 heads x 128 x bf16) / 16 tokens "
        f"a block = {kv['blocks']} blocks ({kv['blocks'] * 16} tokens).",
        "",
    ]
    out += ["Published vLLM numbers against the model:", "", *published_comparison(profile), ""]
    path.write_text("\n".join(out))


def write_plot(path: Path, steps: Steps, profile: StepTimeProfile) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def predict(p: float, pairs: float, d: float, kv: float) -> float:
        return profile.step_time(
            prefill_tokens=int(p),
            prefill_attention_pairs=int(pairs),
            decode_seqs=int(d),
            kv_tokens_read=int(kv),
        )

    pred = np.array(
        [
            predict(*v)
            for v in zip(
                steps.prefill_tokens, steps.attention_pairs, steps.decode_seqs, steps.kv_tokens, strict=True
            )
        ]
    )
    kinds = np.array([r["kind"] for r in steps.rows])
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    for kind, color in (("prefill", "tab:blue"), ("decode", "tab:orange"), ("mixed", "tab:green")):
        m = kinds == kind
        ax.scatter(steps.seconds[m] * 1e3, pred[m] * 1e3, s=14, color=color, label=kind)
    lo, hi = steps.seconds.min() * 1e3 * 0.8, steps.seconds.max() * 1e3 * 1.2
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="measured step (ms)", ylabel="model (ms)")
    ax.set_title("fit vs measurement, all step shapes")
    ax.legend()

    ax = axes[1]
    m = kinds == "decode"
    for ctx in sorted(set(steps.kv_tokens[m] / steps.decode_seqs[m])):
        sel = m & np.isclose(steps.kv_tokens, steps.decode_seqs * ctx)
        order = np.argsort(steps.decode_seqs[sel])
        b = steps.decode_seqs[sel][order]
        line = ax.plot(b, steps.seconds[sel][order] * 1e3, "o", ms=4, label=f"context {int(ctx)}")
        ax.plot(b, pred[sel][order] * 1e3, "-", color=line[0].get_color(), lw=1)
    ax.set(xscale="log", xlabel="decode batch (sequences)", ylabel="step (ms)")
    ax.set_title("decode steps: points measured, lines model")
    ax.legend(fontsize=8)

    ax = axes[2]
    m = kinds == "prefill"
    order = np.argsort(steps.prefill_tokens[m])
    ax.plot(steps.prefill_tokens[m][order], steps.seconds[m][order] * 1e3, "o", label="measured")
    ax.plot(steps.prefill_tokens[m][order], pred[m][order] * 1e3, "-", label="model")
    ax.set(xscale="log", yscale="log", xlabel="prompt tokens (one prefill step)", ylabel="step (ms)")
    ax.set_title("prefill steps")
    ax.legend()
    fig.suptitle(f"{profile.name}: {profile.hardware}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
