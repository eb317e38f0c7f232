"""Words that the local vLLM models' tokenizer reads as one token each, for exact prompt lengths.

The load generator writes prompt text from such words (`flotilla.loadgen.workload.PromptWriter`),
so a trace's prompt of N tokens is N tokens for the engine too, and the Rust routers, which route
on text, see text. The tokenizer is byte-level BPE whose pre-tokenizer splits before every space,
so a word " abc" that is itself a vocabulary entry ("Ġabc") stays one token next to any other.
"""

from __future__ import annotations

import json
from pathlib import Path

_SPACE = "\u0120"  # byte-level BPE's rendering of the space byte


def one_token_words(model: Path) -> list[str]:
    """The vocabulary's lowercase ASCII words with a leading space, as text (" the", ...)."""
    vocab = json.loads((model / "tokenizer.json").read_text())["model"]["vocab"]
    words = sorted(
        t for t in vocab if t.startswith(_SPACE) and t[1:].isascii() and t[1:].isalpha() and t[1:].islower()
    )
    if len(words) < 64:
        raise ValueError(f"{model}: only {len(words)} one-token words; is this a byte-level BPE tokenizer?")
    return [" " + t[1:] for t in words]
