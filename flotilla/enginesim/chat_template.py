"""A fixed chat template (the engine has no tokenizer config to read one from)."""

from __future__ import annotations

from collections.abc import Sequence

from flotilla.enginesim.protocol import ChatMessage


def render(messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
    out = "".join(f"<|{m.role}|>\n{m.text()}<|end|>\n" for m in messages)
    return out + "<|assistant|>\n" if add_generation_prompt else out
