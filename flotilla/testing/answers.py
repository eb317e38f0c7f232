"""What a client got from an OpenAI-style call, reduced to what must match between two ways of
serving it (through the router sliced, or straight from an engine): text, token ids, finish
reason, usage, and the response ids seen (a sliced answer must show one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from flotilla.loadgen.stream import sse_lines

PATHS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}


def sse_events(text: str) -> list[dict[str, Any]]:
    """The JSON events of an SSE body, which must end with `data: [DONE]`."""
    out = [
        orjson.loads(line[6:])
        for line in sse_lines(text)
        if line.startswith("data: ") and line[6:] != "[DONE]"
    ]
    if not text.rstrip().endswith("data: [DONE]"):
        raise AssertionError(f"stream did not end with [DONE]: ...{text[-200:]!r}")
    return out


USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _counts(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The token counts of a usage object (engines differ in the optional detail fields)."""
    return None if usage is None else {k: usage.get(k) for k in USAGE_COUNTS}


@dataclass
class Answer:
    text: str
    finish: str | None
    stop_reason: Any
    usage: dict[str, Any] | None
    ids: list[int] | None
    response_ids: set[str] = field(default_factory=set, compare=False)
    pieces: list[str] = field(default_factory=list, compare=False)
    """Streamed: the text of each event that carried token ids (one per token for an engine)."""


def _choice_text(kind: str, choice: dict[str, Any], stream: bool) -> str:
    if kind == "completion":
        return str(choice.get("text") or "")
    part = choice.get("delta") if stream else choice.get("message")
    return str((part or {}).get("content") or "")


def answer(kind: str, resp: httpx.Response, *, stream: bool) -> Answer:
    """The answer in `resp` (a 200, streamed or not) of a single-choice request."""
    if resp.status_code != 200:
        raise AssertionError(f"{resp.status_code}: {resp.text[:500]}")
    if not stream:
        body = resp.json()
        c = body["choices"][0]
        return Answer(
            text=_choice_text(kind, c, stream=False),
            finish=c["finish_reason"],
            stop_reason=c.get("stop_reason"),
            usage=_counts(body["usage"]),
            ids=c.get("token_ids"),
            response_ids={body["id"]},
        )
    out = Answer(text="", finish=None, stop_reason=None, usage=None, ids=[])
    for ev in sse_events(resp.text):
        out.response_ids.add(ev["id"])
        if ev.get("usage"):
            out.usage = _counts(ev["usage"])
        for c in ev["choices"]:
            piece = _choice_text(kind, c, stream=True)
            out.text += piece
            if c.get("token_ids"):
                assert out.ids is not None
                out.ids += c["token_ids"]
                out.pieces.append(piece)
            if c.get("finish_reason"):
                if out.finish is not None:
                    raise AssertionError("more than one finish_reason in one stream")
                out.finish, out.stop_reason = c["finish_reason"], c.get("stop_reason")
    return out
