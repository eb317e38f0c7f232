"""The stand-in "model": the next token is a seeded hash of the last few token ids.

Because the next token depends only on a window of the context, greedy generation from
``prompt + generated[:i]`` continues exactly as the unsliced run did, which is the property the
router's slice-level scheduling relies on (and which vLLM shows with greedy decoding). The end of a
generation is part of the same function: at every position the context hash decides whether EOS
comes next, with probability ``1 / mean_output_tokens``, so output lengths are geometric, fixed per
prompt, and unchanged by continuation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from flotilla.enginesim.tokenizer import Tokenizer

_MASK = (1 << 64) - 1
# Sampling weights of the model's candidate tokens, best first; temperature reshapes them.
_CANDIDATE_WEIGHTS = (0.55, 0.2, 0.12, 0.08, 0.05)


def _mix(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread 64-bit hash step."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


class TextModel:
    """Deterministic next-token function of the last `context_window` token ids."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        seed: int = 0,
        mean_output_tokens: float = 128.0,
        context_window: int = 4,
    ) -> None:
        if mean_output_tokens < 1:
            raise ValueError("mean_output_tokens must be >= 1")
        self._tok = tokenizer
        self._seed = _mix(seed & _MASK)
        self._eos_below = int((1.0 / mean_output_tokens) * (1 << 53))
        self._k = context_window

    def _context_hash(self, context: Sequence[int]) -> int:
        h = self._seed
        for t in context[-self._k :]:
            h = _mix(h ^ (t + 0x9E3779B97F4A7C15) & _MASK)
        return h

    def wants_eos(self, context: Sequence[int]) -> bool:
        """Whether the model would end the generation after `context` (before sampling)."""
        return (_mix(self._context_hash(context) ^ 0xE05) >> 11) < self._eos_below

    def candidates(self, context: Sequence[int]) -> list[int]:
        """The model's ranked next-token candidates (word tokens only)."""
        h = self._context_hash(context)
        n = self._tok.num_words
        out: list[int] = []
        for _ in _CANDIDATE_WEIGHTS:
            h = _mix(h)
            out.append(self._tok.word_id(h % n))
        return out

    def next_token(
        self,
        context: Sequence[int],
        *,
        temperature: float,
        rng: random.Random,
        allow_eos: bool,
    ) -> int:
        """Greedy (temperature 0) or sampled next token; EOS when the context says so and it is allowed."""
        if allow_eos and self.wants_eos(context):
            return self._tok.eos_token_id
        cands = self.candidates(context)
        if temperature <= 0:
            return cands[0]
        weights = [w ** (1.0 / temperature) for w in _CANDIDATE_WEIGHTS]
        return rng.choices(cands, weights=weights)[0]
