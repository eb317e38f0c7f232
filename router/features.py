"""Request features: what policies and the length predictor may know before a request runs.

The router does not tokenize (it does not know every fleet's tokenizer and must stay cheap), so
text prompts are measured in characters and hashed in fixed character blocks; token-id prompts are
exact. Block hashes are chained and stable across processes (blake2b, not Python's salted hash), so
every router replica maps the same prefix to the same key.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flotilla.router.policies.base import RequestFeatures
from flotilla.router.predictor.text import chat_to_text

CHARS_PER_TOKEN = 4.0
PREFIX_BLOCK_CHARS = 64
"""Characters per prefix block of a text prompt (the router's `prefix_block_chars` default)."""
PREFIX_BLOCK_TOKENS = 16
"""Token ids per prefix block of a token prompt."""
MAX_PREFIX_BLOCKS = 128
"""Prompt blocks hashed (2,048 tokens, or 8 KiB of text): deep enough that prompts sharing a long
system prompt still differ in their hashes, so prefix affinity can tell conversations apart."""


def prompt_of(kind: str, body: dict[str, Any]) -> str | list[int] | None:
    """The prompt as text (chat messages joined with their roles) or token ids; None if malformed."""
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        parts: list[str] = []
        for m in messages:
            if not isinstance(m, dict):
                return None
            content = m.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(f"{m.get('role', '')}\n{content if isinstance(content, str) else ''}\n")
        return "".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) for t in prompt):
            return prompt
        first = prompt[0]
        if isinstance(first, str):
            return first  # a batch of prompts: the first one decides the affinity
        if isinstance(first, list) and all(isinstance(t, int) for t in first):
            return first
    return None


def prompt_text(kind: str, body: dict[str, Any]) -> str:
    """The prompt as the length predictor reads it: chat contents joined without roles, as its
    training prompts look; token-id prompts give "" (the predictor then has the length alone)."""
    if kind == "chat":
        messages = body.get("messages")
        return chat_to_text(
            [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        )
    prompt = prompt_of(kind, body)
    return prompt if isinstance(prompt, str) else ""


def prefix_hashes(
    prompt: str | list[int], *, block_chars: int, block_tokens: int, max_blocks: int
) -> tuple[int, ...]:
    if isinstance(prompt, str):
        data = prompt.encode()
        size = block_chars
    else:
        data = b"".join(t.to_bytes(4, "little", signed=False) for t in prompt[: block_tokens * max_blocks])
        size = block_tokens * 4
    out: list[int] = []
    h = hashlib.blake2b(digest_size=8)
    for b in range(min(len(data) // size, max_blocks)):
        h.update(data[b * size : (b + 1) * size])
        out.append(int.from_bytes(h.copy().digest(), "big"))
    return tuple(out)


def extract(
    kind: str,
    body: dict[str, Any],
    model: str,
    *,
    block_chars: int = PREFIX_BLOCK_CHARS,
    block_tokens: int = PREFIX_BLOCK_TOKENS,
    max_blocks: int = MAX_PREFIX_BLOCKS,
) -> RequestFeatures:
    prompt = prompt_of(kind, body) or ""
    # One sequence's size, for placement and the predictor; `auth.estimate_tokens` charges a key
    # for the whole request (every prompt of a batch, n completions) and stays separate for that.
    n_tokens = len(prompt) if isinstance(prompt, list) else int(len(prompt) / CHARS_PER_TOKEN) + 1
    max_tokens = body.get("max_completion_tokens") if kind == "chat" else None
    max_tokens = max_tokens if isinstance(max_tokens, int) else body.get("max_tokens")
    return RequestFeatures(
        model=model,
        prompt_tokens=n_tokens,
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None,
        prefix_hashes=prefix_hashes(
            prompt, block_chars=block_chars, block_tokens=block_tokens, max_blocks=max_blocks
        ),
    )
