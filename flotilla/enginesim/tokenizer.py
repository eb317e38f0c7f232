"""A small reversible tokenizer: 256 byte tokens, one EOS token and a fixed vocabulary of words.

Any text round-trips (``decode(encode(text)) == text``) because whatever is not a vocabulary word
falls back to its UTF-8 bytes. The model only ever generates word tokens (pure ASCII, each with a
leading space), so generated text can be detokenized one token at a time, as a stream needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

EOS_TOKEN_ID = 256
FIRST_WORD_ID = 257

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_PIECE = re.compile(r" ?[a-z]+|.", re.DOTALL)


def _word_list(count: int) -> list[str]:
    """Pronounceable made-up words (" ba", " bako", ...): fixed, so token ids are stable."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    words = [" " + s for s in syllables]
    words += [" " + a + b for a in syllables for b in syllables]
    return words[:count]


class Tokenizer:
    """Byte fallback plus words; ids: 0-255 bytes, 256 EOS, 257.. words."""

    def __init__(self, num_words: int = 1024) -> None:
        self._words = _word_list(num_words)
        self._word_ids = {w: FIRST_WORD_ID + i for i, w in enumerate(self._words)}
        self._piece_cache: dict[int, bytes] = {}

    @property
    def vocab_size(self) -> int:
        return FIRST_WORD_ID + len(self._words)

    @property
    def eos_token_id(self) -> int:
        return EOS_TOKEN_ID

    @property
    def num_words(self) -> int:
        return len(self._words)

    def word_id(self, index: int) -> int:
        """The id of the index-th vocabulary word (what the model samples from)."""
        return FIRST_WORD_ID + index

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _PIECE.findall(text):
            word = self._word_ids.get(piece)
            if word is not None:
                ids.append(word)
            else:
                ids.extend(piece.encode())
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        if token_id < EOS_TOKEN_ID:
            return bytes((token_id,))
        if token_id == EOS_TOKEN_ID:
            return b""  # a special token: skipped when detokenizing, as vLLM does by default
        return self._words[token_id - FIRST_WORD_ID].encode()

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes(t) for t in ids).decode(errors="replace")

    def is_valid(self, ids: Sequence[int]) -> bool:
        limit = self.vocab_size
        return all(0 <= t < limit for t in ids)
