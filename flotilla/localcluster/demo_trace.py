"""The demo's workload: the first minute of a real production trace, fitted to the demo fleets.

The Mooncake conversation trace (Kimi's serving, FAST'25) gives arrival times, prompt and output
lengths, and `hash_ids`: ids of 512-token prompt blocks, equal ids meaning a shared prefix. Each
block becomes a fixed run of words, so requests that share blocks in the trace share prompt
prefixes here too (and hit the engines' prefix caches the same way). Prompts are token ids in the
serving engine's vocabulary (`PromptBuilder(vocab)`: the simulated engine's words, or the local
vLLM model's tokens), so every engine sees exactly the trace's prompt length. Pure functions: no
I/O beyond reading the trace file.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flotilla.enginesim.tokenizer import FIRST_WORD_ID

DEFAULT_TRACE = Path("../shared/data/traces/mooncake_conversation_trace.jsonl")
BLOCK_TOKENS = 512
VOCAB_WORDS = 1024
ENGINESIM_VOCAB = (FIRST_WORD_ID, FIRST_WORD_ID + VOCAB_WORDS)
"""enginesim's vocabulary words (its default 1,024): ids [start, end)."""
VLLM_VOCAB = (3, 2048)
"""The local vLLM models' tokens less their three special ones (`flotilla.vllmcpu.tinymodel`)."""


@dataclass(frozen=True)
class TraceRequest:
    """One request to replay: when (seconds from the start), for which model, how long."""

    at_s: float
    model: str
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...]


@dataclass(frozen=True)
class TraceFit:
    """How the trace is fitted to the demo: a time window, a rate scale and a context cap."""

    duration_s: float = 60.0
    rate_scale: float = 1.0
    """Arrivals per second relative to the trace (2.0 replays the trace twice as fast)."""
    max_input_tokens: int = 8192
    """Prompts longer than this are cut (the trace reaches 120k tokens; the demo engines'
    prefill would dominate a one-minute run)."""
    max_output_tokens: int = 1024


def load_trace(path: Path, models: Sequence[str], fit: TraceFit) -> list[TraceRequest]:
    """The requests arriving within `fit.duration_s`, dealt to `models` in turn by conversation:
    requests that share their first two prompt blocks go to the same model."""
    if not models:
        raise ValueError("no models to send requests to")
    window_ms = fit.duration_s * 1000.0 * fit.rate_scale
    out: list[TraceRequest] = []
    with path.open() as lines:
        for line in lines:
            row = json.loads(line)
            if row["timestamp"] >= window_ms:
                break  # the trace is sorted by arrival
            hash_ids = tuple(int(h) for h in row["hash_ids"])
            conversation = hash_ids[1] if len(hash_ids) > 1 else (hash_ids[0] if hash_ids else 0)
            out.append(
                TraceRequest(
                    at_s=row["timestamp"] / 1000.0 / fit.rate_scale,
                    model=models[conversation % len(models)],
                    input_tokens=max(1, min(int(row["input_length"]), fit.max_input_tokens)),
                    output_tokens=max(1, min(int(row["output_length"]), fit.max_output_tokens)),
                    hash_ids=hash_ids,
                )
            )
    return out


class PromptBuilder:
    """Turns a request's prompt blocks into exactly `input_tokens` token ids from `vocab`."""

    def __init__(self, vocab: tuple[int, int] = ENGINESIM_VOCAB) -> None:
        self._vocab = vocab
        self._blocks: dict[int, list[int]] = {}

    def _block(self, hash_id: int) -> list[int]:
        if (ids := self._blocks.get(hash_id)) is None:
            rng = random.Random(hash_id)
            ids = [rng.randrange(*self._vocab) for _ in range(BLOCK_TOKENS)]
            self._blocks[hash_id] = ids
        return ids

    def prompt(self, request: TraceRequest) -> list[int]:
        ids: list[int] = []
        for hash_id in request.hash_ids or (0,):
            ids += self._block(hash_id)
            if len(ids) >= request.input_tokens:
                break
        while len(ids) < request.input_tokens:  # more tokens than blocks: pad with the last one
            ids += self._block(request.hash_ids[-1] if request.hash_ids else 0)
        return ids[: request.input_tokens]
