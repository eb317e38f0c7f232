"""One generation inside the engine: its tokens, sampling state and output channel (its KV blocks
are the engine model's, `flotilla.sim.engine.Seq`)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """The subset of vLLM's SamplingParams the engine honours."""

    max_tokens: int
    temperature: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False


@dataclass(frozen=True)
class TokenEvent:
    """What one engine step produced for one sequence (a stream chunk's worth)."""

    index: int
    token_ids: tuple[int, ...]
    text: str
    finish_reason: str | None = None
    stop_reason: str | int | None = None


@dataclass(eq=False)
class Sequence:
    request_id: str
    index: int
    prompt_ids: list[int]
    params: SamplingParams
    sink: asyncio.Queue[TokenEvent]
    rng: random.Random
    arrival: float
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    emitted_chars: int = 0
    first_token_at: float | None = None
    finish_reason: str | None = None
    aborted: bool = False

    def __post_init__(self) -> None:
        self.tokens = list(self.prompt_ids)

    @property
    def num_prompt(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def output_ids(self) -> list[int]:
        return self.tokens[self.num_prompt :]

    @property
    def num_output(self) -> int:
        return len(self.tokens) - self.num_prompt

    @property
    def done(self) -> bool:
        return self.aborted or self.finish_reason is not None
