"""Measure engine step times of a Llama-3.1-8B-shaped decoder on one GPU (runs ON the GPU machine).

    python3 benchmarks/gpu_calibration/calibrate.py --out $OUT            # full run, ~2.5 min on an H100
    python3 benchmarks/gpu_calibration/calibrate.py --out $OUT --dry-run  # 2 layers, a few points

Writes steps.csv (one row per step shape and mode) and meta.json (machine, the two ceilings, the
memory profile that sizes vLLM's KV cache, correctness checks). fit.py turns them into a profile.
Every step is timed replayed from a CUDA graph, which leaves out the Python launch overhead of this
eager model (vLLM replays graphs up to 512 tokens and runs larger steps through compiled,
fused code whose launch cost hides behind the GPU work). Steps of at most 512 tokens are also timed
eagerly, to show what the graphs save.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from fused_ops import kernel_errors
from llama_step import KVPool, LlamaShape, LlamaStep, LlamaWeights, StepShape, flash

EAGER_MAX_TOKENS = 512
PREFILL = [128, 256, 512, 1024, 2048, 3072, 4096, 6144, 8192]
DECODE_BATCH = [1, 2, 4, 8, 16, 32, 64, 128, 256]
DECODE_CTX = [512, 1024, 2048, 4096, 8192]
MIXED_CHUNK = [128, 512, 2048, 4096]
MIXED_PRIOR = [0, 4096]
MIXED_DECODES = [0, 4, 32, 128]
MIXED_CTX = [1024, 4096]


def timed(fn: Callable[[], object], warmup: int, reps: int) -> list[float]:
    """Seconds per call, back to back, each call bracketed by CUDA events."""
    for _ in range(warmup):
        fn()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in ev:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) / 1e3 for s, e in ev]


def _matmul_tflops(n: int, reps: int) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    return 2 * n**3 / statistics.median(timed(lambda: a @ b, 3, reps)) / 1e12


def _hbm_tbps(nbytes: int, reps: int) -> tuple[float, float]:
    """Device-to-device copy (bytes read plus written) and a read-only reduction."""
    src = torch.randn(nbytes // 2, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy = statistics.median(timed(lambda: dst.copy_(src), 3, reps))
    read = statistics.median(timed(src.sum, 3, reps))
    return 2 * nbytes / copy / 1e12, nbytes / read / 1e12


def ceilings(reps: int) -> dict[str, float]:
    tflops = _matmul_tflops(8192, reps)
    copy, read = _hbm_tbps(2 << 30, reps)
    torch.cuda.empty_cache()
    return {"bf16_matmul_tflops": tflops, "hbm_copy_tbps": copy, "hbm_read_tbps": read}


def attention_checks() -> dict[str, float]:
    """FlashAttention output vs a float32 reference: chunk with prior context, and a decode batch."""
    g = torch.Generator(device="cuda").manual_seed(7)
    errs = {}
    for name, (b, lq, lk, causal) in {"chunk": (1, 96, 352, True), "decode": (5, 1, 300, False)}.items():
        # q as a slice of a fused qkv output, strided exactly as in the model
        qkv = torch.randn(b * lq, 6144, device="cuda", dtype=torch.bfloat16, generator=g)
        q = qkv[:, :4096].view(b, lq, 32, 128)
        k = torch.randn(b, lk, 8, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(b, lk, 8, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        out = flash(q, k, v, causal).float()
        kf = k.float().repeat_interleave(4, dim=2)
        vf = v.float().repeat_interleave(4, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), kf) / 128**0.5
        if causal:  # bottom-right: query i sees keys up to lk - lq + i
            qi = torch.arange(lq, device="cuda")[:, None]
            ki = torch.arange(lk, device="cuda")[None, :]
            scores = scores.masked_fill(ki > qi + lk - lq, float("-inf"))
        ref = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), vf)
        errs[name] = float((out - ref).norm() / ref.norm())
    return errs


def memory_profile(weights: LlamaWeights, shape: LlamaShape, tokens: int) -> dict[str, int]:
    """What vLLM's profiling run measures: peak activations of a max-size step, and non-torch memory."""
    step = StepShape(chunk_len=tokens)
    kv_shape = (1, tokens, shape.kv_heads, shape.head_dim)
    cache = {n: torch.empty(kv_shape, device="cuda", dtype=torch.bfloat16) for n in ("chunk_k", "chunk_v")}
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    LlamaStep(weights, shape, step, [cache] * shape.layers)()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    free, total = torch.cuda.mem_get_info()
    return {
        "total_bytes": total,
        "weights_bytes": weights.nbytes(),
        "activation_peak_bytes": peak,
        "non_torch_bytes": (total - free) - torch.cuda.memory_reserved(),
        "profile_tokens": tokens,
    }


def step_grid(dry: bool) -> Iterator[tuple[str, StepShape]]:
    if dry:
        yield from (("prefill", StepShape(chunk_len=n)) for n in (128, 1024))
        yield from (("decode", StepShape(decode_seqs=b, decode_ctx=c)) for b, c in ((1, 512), (64, 8192)))
        yield "mixed", StepShape(chunk_len=512, chunk_prior=4096, decode_seqs=32, decode_ctx=4096)
        return
    for n in PREFILL:
        yield "prefill", StepShape(chunk_len=n)
    for b in DECODE_BATCH:
        for c in DECODE_CTX:
            yield "decode", StepShape(decode_seqs=b, decode_ctx=c)
    for n in MIXED_CHUNK:
        for p in MIXED_PRIOR:
            for d in MIXED_DECODES:
                for c in MIXED_CTX if d else [0]:
                    if d or p:  # p = 0, d = 0 is a plain prefill, timed above
                        yield "mixed", StepShape(chunk_len=n, chunk_prior=p, decode_seqs=d, decode_ctx=c)


def measure(step: LlamaStep, graph: bool, warmup: int, reps: int) -> list[float]:
    if not graph:
        return timed(step, warmup, reps)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
        step()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    times = timed(g.replay, warmup, reps)
    del g
    return times


def _flash_impls() -> list[str]:
    try:
        return list(torch.nn.attention.list_flash_attention_impls())
    except Exception as exc:  # a torch without the API
        return [f"unavailable: {exc}"]


def environment() -> dict[str, object]:
    props = torch.cuda.get_device_properties(0)
    smi = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit",
            "--format=csv,noheader",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "gpu": props.name,
        "sms": props.multi_processor_count,
        "l2_bytes": props.L2_cache_size,
        "nvidia_smi": smi,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "torch_flash_impls": _flash_impls(),
        "installed": {
            m: importlib.util.find_spec(m) is not None
            for m in ("flash_attn", "flash_attn_interface", "vllm", "triton", "flashinfer")
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop sweeping after this long")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    shape = LlamaShape(layers=2) if args.dry_run else LlamaShape()
    warmup, reps = (2, 5) if args.dry_run else (3, 20)
    meta: dict[str, object] = {"environment": environment(), "shape": shape.__dict__}
    print(json.dumps(meta["environment"]), flush=True)
    meta["attention_rel_err"] = attention_checks()
    meta["kernel_rel_err"] = kernel_errors()
    print("kernels", meta["kernel_rel_err"], flush=True)
    meta["ceilings"] = ceilings(reps)
    print("checks", meta["attention_rel_err"], "ceilings", meta["ceilings"], flush=True)
    weights = LlamaWeights(shape)
    meta["memory"] = memory_profile(weights, shape, 8192)
    print("memory", meta["memory"], flush=True)
    free, _ = torch.cuda.mem_get_info()
    pool = KVPool(free - (8 << 30), torch.cuda.get_device_properties(0).L2_cache_size)
    meta["kv_pool_bytes"] = pool.buf.numel() * 2
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2))
    fields = [
        "kind",
        "mode",
        "chunk_len",
        "chunk_prior",
        "decode_seqs",
        "decode_ctx",
        "layers",
        "kv_buffers",
        "tokens",
        "median_s",
        "p10_s",
        "p90_s",
        "reps",
    ]
    with (args.out / "steps.csv").open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=fields)
        out.writeheader()
        for kind, st in step_grid(args.dry_run):
            if time.monotonic() - t0 > args.budget_s:
                print("budget spent: stopping the sweep", flush=True)
                meta["stopped_early"] = True
                break
            caches, distinct = pool.layer_caches(shape, st)
            step = LlamaStep(weights, shape, st, caches)
            for graph in [True, False] if st.tokens <= EAGER_MAX_TOKENS else [True]:
                ts = sorted(measure(step, graph, warmup, reps))
                assert step.out_ids is not None and bool((step.out_ids >= 0).all())
                row = {
                    "kind": kind,
                    "mode": "graph" if graph else "eager",
                    **st.__dict__,
                    "layers": shape.layers,
                    "kv_buffers": distinct,
                    "tokens": st.tokens,
                    "median_s": statistics.median(ts),
                    "p10_s": ts[len(ts) // 10],
                    "p90_s": ts[-1 - len(ts) // 10],
                    "reps": reps,
                }
                out.writerow(row)
                fh.flush()
                print(
                    f"{kind:7} {row['mode']:5} L={st.chunk_len:5} p={st.chunk_prior:5} "
                    f"D={st.decode_seqs:3} c={st.decode_ctx:5} {row['median_s'] * 1e3:8.2f} ms",
                    flush=True,
                )
            del step, caches
    meta["elapsed_s"] = time.monotonic() - t0
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"done in {meta['elapsed_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
