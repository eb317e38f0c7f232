"""What the load generator sends and when: trace arrivals or Poisson, with prompts of exact length.

Traces come through `flotilla.sim.workloads` (the same parsing the fleet simulator uses): Mooncake
gives arrival times, lengths, 512-token prefix blocks and multi-turn sessions; Azure gives arrival
times and lengths only. Prompt text is written in words that are one token each in the serving
engine's tokenizer (the enginesim's vocabulary, or `flotilla.vllmcpu.vocabulary` for real vLLM),
so an engine sees exactly the trace's prompt length, and equal block ids become equal text, so
shared prefixes hit the engines' prefix caches (and the routers' prefix trees) as in production.

A `salt` renames every block: the same workload with another salt has the same shape and the same
sharing among its own requests, but shares nothing with the first. Each arm of a comparison gets
its own salt, so no arm inherits a warm prefix cache from the arm that ran before it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from flotilla.enginesim.tokenizer import Tokenizer
from flotilla.sim.request import SimRequest

BLOCK_TOKENS = 512
VOCAB_WORDS = 1024  # the enginesim's default vocabulary: one word, one token
_MASK = (1 << 62) - 1


def enginesim_words() -> list[str]:
    """The enginesim's vocabulary words (" ba", " bako", ...): one token each."""
    tokenizer = Tokenizer(num_words=VOCAB_WORDS)
    return [tokenizer.decode([tokenizer.word_id(i)]) for i in range(VOCAB_WORDS)]


@dataclass(frozen=True)
class PlannedRequest:
    """One request of a run: when to send it (seconds from the start), what, and how long."""

    index: int
    at_s: float
    prompt: str
    prompt_tokens: int
    max_tokens: int
    parent: int | None = None
    """Earlier turn of the same session: this one is sent only after that one has finished."""


class PromptWriter:
    """Writes prompts of exact token length from block ids; equal (salt, id) give equal text.

    `words`: strings that are one token each, and stay so when joined (each starts with a space)."""

    def __init__(self, salt: int, words: Sequence[str] | None = None) -> None:
        self._salt = salt
        self._words = list(words) if words is not None else enginesim_words()
        self._blocks: dict[int, list[str]] = {}

    def _block(self, block_id: int) -> list[str]:
        if (block := self._blocks.get(block_id)) is None:
            rng = random.Random(hash((self._salt, block_id)) & _MASK)
            block = [self._words[rng.randrange(len(self._words))] for _ in range(BLOCK_TOKENS)]
            self._blocks[block_id] = block
        return block

    def prompt(self, block_ids: tuple[int, ...], tokens: int) -> str:
        words: list[str] = []
        for block_id in block_ids:
            words += self._block(block_id)
            if len(words) >= tokens:
                break
        while len(words) < tokens:  # more tokens than blocks: repeat the last one
            words += self._block(block_ids[-1])
        return "".join(words[:tokens])


def _block_ids(request: SimRequest) -> tuple[int, ...]:
    if request.prefix_ids:
        return request.prefix_ids
    # No sharing in the trace (Azure, Poisson): blocks of its own, disjoint from every other request.
    blocks = max(1, -(-request.prompt_tokens // BLOCK_TOKENS))
    return tuple(-(request.id * 4096 + b + 1) for b in range(blocks))


def plan(requests: list[SimRequest], salt: int, words: Sequence[str] | None = None) -> list[PlannedRequest]:
    """The requests as prompts to send (in `words`, see `PromptWriter`), arrival times shifted to
    start at 0."""
    if not requests:
        return []
    t0 = min(r.arrival for r in requests)
    writer = PromptWriter(salt, words)
    position = {r.id: i for i, r in enumerate(requests)}
    return [
        PlannedRequest(
            index=i,
            at_s=r.arrival - t0,
            prompt=writer.prompt(_block_ids(r), r.prompt_tokens),
            prompt_tokens=r.prompt_tokens,
            max_tokens=r.output_tokens,
            parent=position.get(r.parent) if r.parent is not None else None,
        )
        for i, r in enumerate(requests)
    ]


def poisson(
    *, rate: float, count: int, prompt_tokens: int, output_tokens: int, seed: int
) -> list[SimRequest]:
    """`count` independent requests of fixed lengths, exponential gaps at `rate` per second."""
    if rate <= 0 or count <= 0:
        raise ValueError("need a positive rate and count")
    rng = random.Random(seed)
    t = 0.0
    out: list[SimRequest] = []
    for i in range(count):
        out.append(SimRequest(i, t, prompt_tokens, output_tokens))
        t += rng.expovariate(rate)
    return out


def trace_window(
    requests: list[SimRequest], *, duration_s: float, rate: float | None = None, skip_s: float = 0.0
) -> list[SimRequest]:
    """The requests arriving within `duration_s` after `skip_s` at the trace's own times; or, with a
    `rate`, the `rate * duration_s` requests from `skip_s` on, their times rescaled to that mean
    rate (keeping the trace's burstiness). A parent outside the window is dropped, since its turn
    will never be sent."""
    from flotilla.sim.workloads import at_rate

    if rate:
        later = [r for r in requests if r.arrival >= skip_s]
        kept = at_rate(later[: max(1, round(rate * duration_s))], rate)
    else:
        kept = [r for r in requests if skip_s <= r.arrival < skip_s + duration_s]
    ids = {r.id for r in kept}
    return [r if r.parent is None or r.parent in ids else _orphan(r) for r in kept]


def _orphan(request: SimRequest) -> SimRequest:
    from dataclasses import replace

    return replace(request, parent=None)
