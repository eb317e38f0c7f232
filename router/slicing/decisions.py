"""Slice-level scheduling, the pure decisions: which requests may be sliced, how long each slice
is, where the next slice runs, and stop strings that straddle a slice boundary.

A request asking for up to M output tokens is generated in slices of at most S tokens (SCLS, Cheng
et al. 2024): each slice is one engine call, and between slices the request goes back through
admission, so no instance holds a long generation hostage and load is rebalanced as it drifts.
Continuing from `prompt_token_ids + generated token ids` reproduces the unsliced output exactly
under greedy decoding. Everything here is a pure function of its inputs (unit-tested);
`continuation.py` does the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flotilla.router.policies.base import InstanceView, RequestFeatures

# Fields whose meaning does not survive being cut into independent engine calls: n > 1 and
# best_of fork sequences, logprobs would need stitching, a seed would restart its random stream on
# every slice, echo/suffix and structured output (grammar state) would restart per slice.
_UNSLICEABLE_ALWAYS = (
    "best_of",
    "seed",
    "echo",
    "suffix",
    "prompt_logprobs",
    "include_stop_str_in_output",
    "response_format",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "structured_outputs",
    "tools",
    "functions",
)

# Chat fields that carry over to a continuation on /v1/completions (sampling parameters).
CHAT_SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "length_penalty",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "bad_words",
    "logit_bias",
    "allowed_token_ids",
    "min_tokens",
    "priority",
)


def unsliceable_reason(kind: str, body: dict[str, Any]) -> str | None:
    """Why this request must run whole (None: it may be sliced)."""
    for key in _UNSLICEABLE_ALWAYS:
        if body.get(key) not in (None, False):
            return f"`{key}` is set"
    n = body.get("n")
    if n not in (None, 1):
        return "n > 1"
    if kind == "completion":
        if body.get("logprobs") is not None:
            return "`logprobs` is set"
        prompt = body.get("prompt")
        if not (isinstance(prompt, str) or (isinstance(prompt, list) and _is_ids(prompt))):
            return "the prompt is a batch"
    else:
        if body.get("logprobs") or body.get("top_logprobs") is not None:
            return "`logprobs` is set"
        if not isinstance(body.get("messages"), list):
            return "no messages"
    stops = stop_strings(body)
    if stops is None:
        return "`stop` is malformed"
    return None


def _is_ids(prompt: list[Any]) -> bool:
    return bool(prompt) and all(isinstance(t, int) for t in prompt)


def stop_strings(body: dict[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    return None


def slice_budget(slice_tokens: int, remaining: int | None, *, redo: int = 0) -> int:
    """max_tokens of the next slice: S, or what is left of the request's own limit if less.

    `redo`: tokens of the previous slice that are generated again (they ended it inside a
    multi-byte character, `continuation.py`); the slice then gets room for at least one token
    past them, so a run of such tokens longer than S still makes progress."""
    size = max(slice_tokens, redo + 1)
    return size if remaining is None else max(1, min(size, remaining))


def slice_features(
    features: RequestFeatures,
    predicted: float,
    *,
    slice_tokens: int,
    budget: int,
    context_tokens: int,
    generated: int,
) -> RequestFeatures:
    """The features the next slice is dispatched with, by the router and the simulator alike: the
    context so far (prompt + generated) as its prompt, the slice's budget as its max_tokens, and
    what the request's predicted output (`predicted`; 0 when unknown, taken as one slice) leaves
    for this slice, at least 1 and at most the budget."""
    guess = predicted or float(slice_tokens)
    return replace(
        features,
        prompt_tokens=context_tokens,
        max_tokens=budget,
        predicted_output_tokens=float(min(budget, max(1.0, guess - generated))),
        attained_tokens=generated,
    )


def continues(finish_reason: str | None, produced: int, budget: int, remaining: int | None) -> bool:
    """A slice that stopped because of its own limit, with tokens left, goes on; anything else (a
    stop, an EOS, the engine's context limit: fewer tokens than asked) is the request's end."""
    return finish_reason == "length" and produced >= budget and (remaining is None or remaining > 0)


class RebalanceParams(BaseModel):
    """Where the next slice runs: stay (its prefix is cached there) unless moving pays for the re-prefill.

    Under continuous batching a decode step costs about `decode_seq_ms` more per sequence in the
    batch; the next slice of S tokens on an instance with `gap` fewer sequences saves about
    S * gap * decode_seq_ms of its own time, while the context (prompt + generated) must be
    prefilled again elsewhere at `prefill_token_ms` per token. Defaults are of the order of an 8B
    model on one H100 (the enginesim flag defaults; see `flotilla.profiles`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    decode_seq_ms: float = Field(default=0.05, gt=0)
    prefill_token_ms: float = Field(default=0.05, ge=0)
    min_gap_requests: float = Field(default=2.0, ge=0)
    """Hysteresis: never move for a smaller gap in concurrent requests (scrapes are noisy)."""


def instance_load(view: InstanceView) -> float:
    return view.est_requests


def move_gain_ms(
    stay: InstanceView, to: InstanceView, *, slice_tokens: int, context_tokens: int, params: RebalanceParams
) -> float:
    """Expected time saved by running the next slice on `to` rather than `stay` (< 0: stay)."""
    gap = instance_load(stay) - instance_load(to)
    if gap < params.min_gap_requests:
        return -1.0
    return slice_tokens * gap * params.decode_seq_ms - context_tokens * params.prefill_token_ms


def place_next_slice(
    current: str | None,
    ranked: Sequence[InstanceView],
    *,
    slice_tokens: int,
    context_tokens: int,
    params: RebalanceParams,
) -> list[InstanceView]:
    """Reorder the policy's ranking for a continuation slice (SCLS's max-min, prefill counted).

    The current instance (if it can take the slice) goes first unless the least loaded candidate
    saves more decode time than the re-prefill costs; a first slice, or one whose instance is full
    or gone, keeps the policy's choice.
    """
    stay = next((v for v in ranked if v.id == current), None)
    if stay is None:
        return list(ranked)
    target = min(ranked, key=instance_load)
    gain = move_gain_ms(stay, target, slice_tokens=slice_tokens, context_tokens=context_tokens, params=params)
    first = target if target.id != stay.id and gain > 0 else stay
    return [first] + [v for v in ranked if v.id != first.id]


class StopScanner:
    """Client stop strings over the whole output, across slice boundaries.

    Each engine sees only its own slice, so a stop string split by a boundary reaches no engine
    whole. The scanner holds back the last len(longest stop) - 1 characters of the text, enough
    that any match must lie entirely in what it holds, and releases the rest.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """Text safe to release now, and the stop string matched (the text is then cut before it)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, None
        best: tuple[int, str] | None = None
        for s in self.stops:
            at = self.pending.find(s)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, s)
        if best is not None:
            out, self.pending = self.pending[: best[0]], ""
            return out, best[1]
        cut = max(0, len(self.pending) - self.hold)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, None

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class PendingIds:
    """Generated token ids not yet known to end on a whole character (`continuation.py`).

    An event of exactly one id with some text ends on a whole character: an engine releases a
    token's text only once nothing is left incomplete. Any other event (no text of its own, or
    several ids merged) may end inside one, so its ids wait here until such an event follows.
    """

    ids: list[int] = field(default_factory=list)
    text: str = ""
    """The text that came with the held ids."""
    textless_tail: int = 0
    """How many of the last held ids came in events without text (the estimate of what ends
    inside a character when the engine cannot detokenize)."""
    alone: set[int] = field(default_factory=set)
    """Held ids that came in an event of their own with no text: each ends inside a character,
    or is a special token the stream skips (`continuation.py` tells which)."""

    def add(self, ids: list[int], text: str) -> list[int]:
        """Take one event; returns the ids now known to be complete (to release)."""
        if len(ids) == 1 and text:
            return self.take() + ids
        if len(ids) == 1:
            self.alone.add(ids[0])
        self.ids += ids
        self.text += text
        self.textless_tail = self.textless_tail + len(ids) if not text else 0
        return []

    def take(self) -> list[int]:
        """All held ids, and forget them."""
        out, self.ids, self.text, self.textless_tail = self.ids, [], "", 0
        self.alone = set()
        return out
