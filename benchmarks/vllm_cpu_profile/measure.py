"""Time the steps of a served vLLM (CPU) engine, the way the benchmarks run it, from its stream.

    .venv/bin/python benchmarks/vllm_cpu_profile/measure.py --out benchmarks/vllm_cpu_profile/results

One engine is started exactly as `flotilla bench live --engine vllm` and the fidelity check start
theirs (`VllmCommand`, the benchmark model, API server + engine core + worker on one core), and is
measured from outside, through its OpenAI API with streaming and token-id prompts, so the profile
holds everything a request pays on this machine: scheduling, the model, the hand-offs between
vLLM's processes, detokenizing and the HTTP stream. Each step's work is known from the shapes
sent (every prompt is fresh random ids, so no prefix is cached):

- prefill: one prompt of P tokens (P <= the 2,048-token budget: one step) with `max_tokens` 2; the
  time to its first token is one prefill step (its HTTP round trip included), the gap to its
  second one decode step over P tokens;
- decode: N prompts of C tokens at once, then N sequences decode together; while all N decode,
  N tokens come per step, so the step time is the window's length over the tokens in it / N
  (robust to vLLM merging tokens into one event);
- mixed: a P-token prompt arrives once N sequences of 512 tokens all decode; the decoders' longest
  gap after it is the step that prefilled it alongside them.

The sweep runs `--repeat` times and each shape keeps the median. Writes results/steps.csv (one row
per shape, in the units of `flotilla.profiles.StepTimeProfile`) and results/meta.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from flotilla.loadgen.stream import aiter_sse_lines
from flotilla.localcluster.engines import loopback_engines
from flotilla.vllmcpu.command import VllmCommand
from flotilla.vllmcpu.install import TORCH_VERSION, VLLM_CPU_VERSION, ensure_vllm

MODEL = "bench"
VOCAB = (3, 2048)
FIELDS = ["scenario", "prefill_tokens", "attention_pairs", "decode_seqs", "kv_tokens", "chunks", "seconds"]


@dataclass
class Stream:
    sent: float = 0.0
    times: list[float] = field(default_factory=list)
    """When each token arrived (one entry per token id, merged events repeat their time)."""


class Probe:
    def __init__(self, client: httpx.AsyncClient, url: str, seed: int) -> None:
        self.client = client
        self.url = url
        self.rng = random.Random(seed)

    async def stream(self, prompt_tokens: int, max_tokens: int, first: asyncio.Event | None = None) -> Stream:
        out = Stream()
        body = {
            "model": MODEL,
            "prompt": [self.rng.randrange(*VOCAB) for _ in range(prompt_tokens)],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
            "return_token_ids": True,
        }
        out.sent = time.perf_counter()
        async with self.client.stream("POST", self.url + "/v1/completions", json=body) as resp:
            resp.raise_for_status()
            async for line in aiter_sse_lines(resp):
                if line.startswith("data: ") and line != "data: [DONE]":
                    now = time.perf_counter()
                    for choice in orjson.loads(line[6:]).get("choices") or ():
                        out.times += [now] * len(choice.get("token_ids") or ())
                    if first is not None and out.times:
                        first.set()
        if len(out.times) != max_tokens:
            raise RuntimeError(f"asked {max_tokens} tokens, got {len(out.times)}")
        return out


def row(
    scenario: str, *, prefill: int = 0, decodes: int = 0, kv: int = 0, seconds: float
) -> dict[str, object]:
    return {
        "scenario": scenario,
        "prefill_tokens": prefill,
        "attention_pairs": prefill * prefill,
        "decode_seqs": decodes,
        "kv_tokens": kv,
        "chunks": int(prefill > 0),
        "seconds": seconds,
    }


async def prefill(probe: Probe, p: int) -> list[dict[str, object]]:
    s = await probe.stream(p, 2)
    return [
        row(f"prefill-{p}", prefill=p, seconds=s.times[0] - s.sent),
        row(f"prefill-{p}-decode", decodes=1, kv=p + 1, seconds=s.times[1] - s.times[0]),
    ]


async def decode(probe: Probe, n: int, c: int, k: int = 40) -> list[dict[str, object]]:
    streams = await asyncio.gather(*(probe.stream(c, k) for _ in range(n)))
    start = max(s.times[0] for s in streams)  # from here on, all n decode
    end = min(s.times[-1] for s in streams)
    tokens = sum(sum(1 for t in s.times if start < t <= end) for s in streams)
    steps = tokens / n
    if steps < 5:
        raise RuntimeError(f"decode {n}x{c}: only {steps:.1f} steps of all {n} decoding")
    return [row(f"decode-{n}x{c}", decodes=n, kv=n * (c + k // 2), seconds=(end - start) / steps)]


async def mixed(probe: Probe, n: int, p: int, c: int = 512) -> list[dict[str, object]]:
    decoding = [asyncio.Event() for _ in range(n)]
    decoders = [asyncio.create_task(probe.stream(c, 160, first)) for first in decoding]
    for first in decoding:  # every prefill done: from here on, all n decode
        await first.wait()
    await asyncio.sleep(0.3)
    injected_at = time.perf_counter()
    arrival = await probe.stream(p, 1)
    streams = await asyncio.gather(*decoders)
    gaps = []
    for s in streams:
        window = [t for t in s.times if injected_at <= t <= arrival.times[0] + 0.5]
        gaps.append(max((b - a for a, b in itertools.pairwise(window)), default=0.0))
    return [row(f"mixed-{n}+{p}", prefill=p, decodes=n, kv=n * (c + 60), seconds=statistics.median(gaps))]


async def sweep(probe: Probe, *, quick: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for p in [16, 64, 128, 256, 512, 1024, 1536, 2048][:: 3 if quick else 1]:
        rows += await prefill(probe, p)
    grid = [(n, c) for c in (64, 512, 2048) for n in (1, 2, 4, 8, 16, 32, 64, 128) if n * c <= 32768]
    for n, c in grid[:: 4 if quick else 1]:
        rows += await decode(probe, n, c)
    for n in (4, 16) if quick else (4, 16, 32):
        for p in (256, 2048) if quick else (256, 1024, 2048):
            rows += await mixed(probe, n, p)
    return rows


async def measure(out: Path, *, repeat: int, quick: bool) -> dict[str, object]:
    install = ensure_vllm(install=True)
    command = VllmCommand(install, size="bench", max_model_len=8192)
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            loopback_engines(command, count=1, model=MODEL, log_dir=Path(tmp)) as urls,
            httpx.AsyncClient(  # no pool limit: up to 128 streams at once
                timeout=600, trust_env=False, limits=httpx.Limits(max_connections=None)
            ) as client,
        ):
            probe = Probe(client, urls[0], seed=0)
            await sweep(probe, quick=True)  # warm-up: first shapes compile; not kept
            started = time.perf_counter()
            runs = [await sweep(probe, quick=quick) for _ in range(repeat)]
            seconds = time.perf_counter() - started
    rows = []
    for i, first in enumerate(runs[0]):
        times = [run[i]["seconds"] for run in runs]
        rows.append({**first, "seconds": statistics.median(times)})  # type: ignore[type-var]
    write_csv(out / "steps.csv", rows)
    meta = {
        "vllm": VLLM_CPU_VERSION,
        "torch": TORCH_VERSION,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "model": json.loads((install.model("bench") / "config.json").read_text()),
        "limits": {
            "max_num_seqs": 128,  # vLLM's API server defaults on a CPU
            "max_num_batched_tokens": 2048,
            "block_size": 128,
            "kv_cache_blocks": 8192,  # VLLM_CPU_KVCACHE_SPACE=1 GiB of this model's KV
            "max_model_len": 8192,
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(seconds, 1),
        "repeats": repeat,
        "rows": len(rows),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    import csv

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few shapes, to check the script")
    a = parser.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    meta = asyncio.run(measure(a.out, repeat=a.repeat, quick=a.quick))
    print(json.dumps({k: v for k, v in meta.items() if k != "model"}, indent=2))


if __name__ == "__main__":
    main()
