"""Workloads from the shared real data: arrival times, true lengths, shared prefixes, sessions.

- Mooncake (conversation and synthetic): `hash_ids` are ids of 512-token prompt blocks, kept as
  prefix ids; a request whose prompt extends an earlier request's prompt (all of the earlier one's
  full blocks, at least two) is that request's next turn, and is not sent before it completes.
- Azure LLM inference (conversation, Splitwise, CC-BY-4.0): lengths and timestamps only; prompts
  share nothing the trace can show.
- CASTILLO: real prompt text, and the true output length drawn (seeded) from the prompt's ten
  sampled response lengths; only the prompts the length predictor holds out; arrivals are Poisson,
  as the dataset has no times.

Requests longer than the engine allows are clipped, not dropped (dropping would bias towards short
requests): the output to at most half the context, the prompt to what remains. `at_rate` rescales
arrival times to a target mean rate, keeping the trace's burstiness; `in_bursts` compresses runs of
the trace's own arrivals into bursts above capacity, with idle gaps between them.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from flotilla.sim.request import SimRequest

DATA = Path("../shared/data")
TRACES = {
    "mooncake_conversation": DATA / "traces" / "mooncake_conversation_trace.jsonl",
    "mooncake_synthetic": DATA / "traces" / "mooncake_synthetic_trace.jsonl",
    "azure_conv": DATA / "traces" / "AzureLLMInferenceTrace_conv.csv",
    "castillo_llama": DATA / "castillo" / "meta-llama--Llama-3.1-8B-Instruct.jsonl",
    "castillo_mistral": DATA / "castillo" / "mistralai--Mistral-7B-Instruct-v0.3.jsonl",
}
_MASK = (1 << 62) - 1


@dataclass(frozen=True)
class Workload:
    name: str
    requests: list[SimRequest]
    clipped: int = 0
    """Requests whose prompt or output was shortened to fit max_model_len."""
    sessions: int = 0
    """Requests that are a later turn of an earlier one."""
    sample: int = 0
    """Which slice of the trace this is (see `sample`)."""


def _clip(prompt: int, output: int, max_model_len: int) -> tuple[int, int, bool]:
    output = max(1, output)
    if prompt + output <= max_model_len - 1:
        return prompt, output, False
    output = min(output, max_model_len // 2)
    return min(prompt, max_model_len - 1 - output), output, True


def load_mooncake(path: Path, *, max_model_len: int, limit: int | None = None) -> Workload:
    requests: list[SimRequest] = []
    by_prefix: dict[int, int] = {}  # chained hash of a request's full blocks -> latest such request
    clipped = sessions = 0
    with path.open() as f:
        for line in f:
            if limit is not None and len(requests) >= limit:
                break
            row = json.loads(line)
            ids = tuple(int(h) for h in row["hash_ids"])
            chain: list[int] = []
            h = 0
            for pid in ids:
                h = hash((h, pid)) & _MASK
                chain.append(h)
            parent = None
            for k in range(len(chain), 1, -1):
                parent = by_prefix.get(chain[k - 1])
                if parent is not None:
                    break
            prompt, output, cut = _clip(int(row["input_length"]), int(row["output_length"]), max_model_len)
            i = len(requests)
            requests.append(
                SimRequest(
                    id=i,
                    arrival=float(row["timestamp"]) / 1000.0,
                    prompt_tokens=prompt,
                    output_tokens=output,
                    prefix_ids=ids[: -(-prompt // 512)],
                    prefix_block_tokens=512,
                    parent=parent,
                )
            )
            clipped += cut
            sessions += parent is not None
            if len(ids) >= 3:  # the last block is partial: a next turn shares all the others
                by_prefix[chain[len(ids) - 2]] = i
    return Workload(path.stem, requests, clipped, sessions)


def load_azure(path: Path, *, max_model_len: int, limit: int | None = None) -> Workload:
    requests: list[SimRequest] = []
    clipped = 0
    t0: datetime | None = None
    with path.open() as f:
        for row in csv.DictReader(f):
            if limit is not None and len(requests) >= limit:
                break
            # Seven fractional digits: more than datetime parses, so cut to microseconds.
            stamp = row["TIMESTAMP"]
            head, _, frac = stamp.partition(".")
            t = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}")
            t0 = t0 or t
            prompt, output, cut = _clip(int(row["ContextTokens"]), int(row["GeneratedTokens"]), max_model_len)
            requests.append(SimRequest(len(requests), (t - t0).total_seconds(), prompt, output))
            clipped += cut
    return Workload(path.stem, requests, clipped)


def load_castillo(
    path: Path, *, max_model_len: int, limit: int | None = None, seed: int = 0, passes: int = 10
) -> Workload:
    """The prompts the length predictor never saw (its own held-out split), cycled `passes` times
    (or up to `limit` requests), each time with a fresh draw of the true length; Poisson arrivals at
    1 request/s (rescale with `at_rate`). Held out, so a learned predictor is not flattered."""
    from flotilla.predictor_training.data import Part, assign_part
    from flotilla.predictor_training.data import load_castillo as read_records

    heldout = [r for r in read_records(path) if assign_part(r) == Part.HELDOUT]
    rng = random.Random(seed)
    total = limit if limit is not None else passes * len(heldout)
    requests: list[SimRequest] = []
    clipped = 0
    t = 0.0
    for i in range(total):
        rec = heldout[i % len(heldout)]
        sizes = [s for s in rec.output_sizes if s > 0] or [1]
        prompt, output, cut = _clip(rec.input_tokens, rng.choice(sizes), max_model_len)
        t += rng.expovariate(1.0)
        requests.append(SimRequest(i, t, prompt, output, text=rec.text))
        clipped += cut
    return Workload(path.stem, requests, clipped)


def load(name: str, *, max_model_len: int, limit: int | None = None, seed: int = 0) -> Workload:
    path = TRACES[name]
    if name.startswith("mooncake"):
        return load_mooncake(path, max_model_len=max_model_len, limit=limit)
    if name.startswith("azure"):
        return load_azure(path, max_model_len=max_model_len, limit=limit)
    return load_castillo(path, max_model_len=max_model_len, limit=limit, seed=seed)


def at_rate(requests: list[SimRequest], rate: float) -> list[SimRequest]:
    """The same requests with arrival times scaled to a mean of `rate` requests per second."""
    if not requests or rate <= 0:
        raise ValueError("need requests and a positive rate")
    times = np.array([r.arrival for r in requests])
    t0 = float(times.min())
    span = float(times.max()) - t0
    if span <= 0:
        return [replace(r, arrival=0.0) for r in requests]
    scale = (len(requests) - 1) / span / rate
    return [replace(r, arrival=(r.arrival - t0) * scale) for r in requests]


def in_bursts(requests: list[SimRequest], rate: float, peak: float, burst_s: float) -> list[SimRequest]:
    """The trace's own arrivals compressed into bursts: consecutive runs of `peak x burst_s`
    requests arrive at a mean of `peak` requests per second (their own gaps, rescaled), each run
    followed by an idle gap so that the mean over the whole trace is `rate`.

    A load shape `at_rate` cannot make: the same mean load, but the backlog a burst leaves has to
    drain in the gap, which is where the order of a router-held queue matters most."""
    if peak <= rate or rate <= 0 or burst_s <= 0:
        raise ValueError("need 0 < rate < peak and a positive burst length")
    steady = at_rate(requests, peak)
    per_burst = max(1, round(peak * burst_s))
    # Each burst's requests span per_burst / peak s at the peak rate; the gap after it makes the
    # cycle last per_burst / rate s, the mean rate's time for as many requests.
    gap = per_burst / rate - per_burst / peak
    shift = [0.0] * len(steady)
    for rank, k in enumerate(sorted(range(len(steady)), key=lambda k: steady[k].arrival)):
        shift[k] = (rank // per_burst) * gap
    return [replace(r, arrival=r.arrival + d) for r, d in zip(steady, shift, strict=True)]


def extend_to(w: Workload, n: int) -> Workload:
    """The trace played again after itself until it has `n` requests (for sizing runs past a trace).

    Each repetition gets fresh request ids, parents and prefix ids, so it shares no cache with the
    earlier ones: more traffic of the same shape, not the same users again.
    """
    base = w.requests
    if n <= len(base):
        head = base[:n]
        return Workload(w.name, head, w.clipped, sum(r.parent is not None for r in head))
    times = [r.arrival for r in base]
    period = max(times) - min(times) + (max(times) - min(times)) / max(1, len(base) - 1)
    id_span = max((max(r.prefix_ids, default=0) for r in base), default=0) + 1
    out: list[SimRequest] = []
    rep = 0
    while len(out) < n:
        for r in base:
            if len(out) >= n:
                break
            shift = rep * len(base)
            out.append(
                replace(
                    r,
                    id=r.id + shift,
                    arrival=r.arrival + rep * period,
                    prefix_ids=tuple(p + rep * id_span for p in r.prefix_ids),
                    parent=None if r.parent is None else r.parent + shift,
                )
            )
        rep += 1
    return Workload(f"{w.name}x{rep}", out, w.clipped * rep, sum(r.parent is not None for r in out))


def sample(w: Workload, n: int, index: int) -> Workload:
    """The `index`-th run of `n` consecutive requests of the trace (repeated past its end)."""
    longer = extend_to(w, n * (index + 1)).requests[n * index :]
    return Workload(w.name, longer, w.clipped, sum(r.parent is not None for r in longer), index)
