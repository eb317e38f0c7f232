"""From a request to encoder inputs: the one tokenisation that training and serving share.

Only the first and last tokens of a prompt are encoded: the instruction of a chat prompt sits at its
start, that of a code prompt ("# SOLUTION START", "Write a function...") often at its end, and the
cost of a transformer grows with every token kept. Cheap numeric features (prompt length in the
serving model's tokens, characters) ride along and go straight to the head.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Long prompts are cut in characters before tokenising so tokenisation stays O(kept tokens).
_CHARS_PER_TOKEN_BOUND = 12
CLS_ID = 101
SEP_ID = 102
UNK_ID = 100
PAD_ID = 0
N_CHEAP = 2


@dataclass(frozen=True, slots=True)
class PredictorInput:
    """What the length predictor reads of a request: its prompt text and length (the router's
    `RequestFeatures` carry hashes and the prediction instead; the text is not kept there).

    `prompt_tokens` is the count in the serving model's own tokenizer (the router has it from the
    engine's tokenizer or estimates it); `max_tokens` caps the predicted lengths.
    """

    text: str
    prompt_tokens: int
    max_tokens: int | None = None


def chat_to_text(messages: Sequence[dict[str, object]]) -> str:
    """Flatten OpenAI-style chat messages the way the training prompts look (role-free text)."""
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return "\n".join(parts)


def clip_text(text: str, keep_tokens: int) -> str:
    """Keep only as many characters at each end as could hold the tokens we will keep."""
    bound = keep_tokens * _CHARS_PER_TOKEN_BOUND
    if len(text) <= 2 * bound:
        return text
    return text[:bound] + " " + text[-bound:]


def head_tail(ids: Sequence[int], keep: int) -> list[int]:
    """[CLS] + first keep//2 + last keep - keep//2 content ids + [SEP]."""
    ids = list(ids)
    if len(ids) > keep:
        head = keep // 2
        ids = ids[:head] + ids[len(ids) - (keep - head) :]
    return [CLS_ID, *ids, SEP_ID]


def cheap_features(text: str, prompt_tokens: int) -> np.ndarray:
    """Scaled to about unit range, like the pooled embedding they are concatenated with."""
    return np.array([np.log1p(prompt_tokens) / 8.0, np.log1p(len(text)) / 10.0], dtype=np.float32)


def pad_batch(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into (ids, mask) arrays."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.float32)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1.0
    return ids, mask


class VocabMap:
    """Maps the full WordPiece vocabulary onto the rows the artifact kept (others become [UNK])."""

    def __init__(self, kept_ids: np.ndarray, vocab_size: int) -> None:
        self.kept_ids = np.asarray(kept_ids, dtype=np.int64)
        self.dense = np.full(vocab_size, -1, dtype=np.int64)
        self.dense[self.kept_ids] = np.arange(len(self.kept_ids))
        unk = self.dense[UNK_ID]
        if unk < 0:
            raise ValueError("kept vocabulary must contain [UNK]")
        self.dense[self.dense < 0] = unk

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.dense[ids]
        return out

    @staticmethod
    def keep_from(id_lists: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
        """The ids seen in training prompts plus the special tokens."""
        seen = np.zeros(vocab_size, dtype=bool)
        seen[[PAD_ID, UNK_ID, CLS_ID, SEP_ID]] = True
        for ids in id_lists:
            seen[list(ids)] = True
        return np.flatnonzero(seen)


_WORD = re.compile(r"\w+|[^\w\s]")
WIDE_CHARS = 1200
WIDE_MAX = 768


def wide_ids(text: str, buckets: int) -> np.ndarray:
    """Hashed word unigrams and bigrams of (both ends of) the whole prompt, for the "wide" part.

    The encoder sees only `keep` tokens; this bag of n-grams sees up to WIDE_CHARS characters at
    each end. crc32, not Python's salted hash, so training and serving agree across processes.
    """
    if len(text) > 2 * WIDE_CHARS:
        text = text[:WIDE_CHARS] + " " + text[-WIDE_CHARS:]
    words = _WORD.findall(text.lower())
    grams = [w.encode() for w in words] + [f"{a} {b}".encode() for a, b in itertools.pairwise(words)]
    if len(grams) > WIDE_MAX:
        grams = grams[: WIDE_MAX // 2] + grams[-WIDE_MAX // 2 :]
    return np.array([zlib.crc32(g) % buckets for g in grams], dtype=np.int64)
