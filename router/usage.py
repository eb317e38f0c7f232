"""Token counts from the `usage` block an engine puts in an OpenAI answer or stream event.

Two readers need them: the request path (completion tokens, what the length predictor learns from)
and the auth gate (total tokens, what a key's rate limit is charged); the parsing lives here once.
"""

from __future__ import annotations

from typing import Literal

import orjson

Field = Literal["completion_tokens", "total_tokens"]


def usage_tokens(payload: bytes, field: Field) -> int | None:
    """`usage.<field>` of one JSON answer or event; None when absent or not JSON."""
    try:
        usage = orjson.loads(payload).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    tokens = usage.get(field) if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else None


def stream_usage_tokens(chunk: bytes, field: Field) -> int | None:
    """`usage.<field>` of the last event in a chunk of SSE bytes that carries usage (a client that
    asked for `stream_options.include_usage`); None when none does."""
    # Only an event naming the field can have it: the cheap test spares parsing every other one.
    marker = f'"{field}"'.encode()
    if marker not in chunk:
        return None
    found: int | None = None
    for line in chunk.split(b"\n"):
        if line.startswith(b"data: {") and marker in line:
            tokens = usage_tokens(line[6:], field)
            found = tokens if tokens is not None else found
    return found
