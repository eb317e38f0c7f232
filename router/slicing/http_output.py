"""The client's one answer to a sliced request: SSE events or a JSON body in vLLM's shapes.

The router writes these itself rather than relaying engine bytes: a chat request continues on
/v1/completions, ids and `created` must stay those of the first slice, usage must add up over all
slices, and only the last slice's finish reason counts. The engine-only fields the router asked
for (`prompt_token_ids`, `token_ids`) appear only if the client asked for them.
"""

from __future__ import annotations

from typing import Any

import orjson

from flotilla.router.slicing.continuation import Generation, Piece


class SliceOutput:
    def __init__(self, gen: Generation, rid: str) -> None:
        self.gen = gen
        self.rid = rid
        body = gen.body
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.want_ids = body.get("return_token_ids") is True
        self.completion_tokens = 0
        self.text: list[str] = []
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None
        self.stop_reason: Any = None

    def _head(self, obj: str) -> dict[str, Any]:
        head = self.gen.head
        return {
            "id": head.get("id") or f"cmpl-{self.rid}",
            "object": obj,
            "created": head.get("created") or 0,
            "model": head.get("model") or self.gen.body.get("model"),
        }

    def add(self, piece: Piece) -> None:
        self.completion_tokens += len(piece.token_ids)
        self.text.append(piece.text)
        self.token_ids.extend(piece.token_ids)
        if piece.finish_reason is not None:
            self.finish_reason, self.stop_reason = piece.finish_reason, piece.stop_reason

    def usage(self) -> dict[str, Any]:
        prompt = len(self.gen.prompt_ids or ())
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + self.completion_tokens,
            "completion_tokens": self.completion_tokens,
            "prompt_tokens_details": None,
        }

    # ---- streaming -----------------------------------------------------------------------------

    def events(self, piece: Piece, first: bool) -> bytes:
        """SSE bytes for one piece (nothing when it carries neither text, ids nor the finish)."""
        self.add(piece)
        chat = self.gen.kind == "chat"
        out = b""
        if first and chat:
            role: dict[str, Any] = {"index": 0, "delta": {"role": "assistant", "content": ""}}
            chunk = self._head("chat.completion.chunk") | {
                "choices": [role | {"logprobs": None, "finish_reason": None}]
            }
            if self.want_ids:
                chunk["prompt_token_ids"] = self.gen.prompt_ids
            out += _sse(chunk)
        if not piece.text and piece.finish_reason is None and not (self.want_ids and piece.token_ids):
            return out
        choice: dict[str, Any] = {"index": 0}
        if chat:
            choice["delta"] = {"content": piece.text}
        else:
            choice["text"] = piece.text
        choice |= {"logprobs": None, "finish_reason": piece.finish_reason, "stop_reason": piece.stop_reason}
        if self.want_ids:
            if first and not chat:
                choice["prompt_token_ids"] = self.gen.prompt_ids
            choice["token_ids"] = list(piece.token_ids)
        obj = "chat.completion.chunk" if chat else "text_completion"
        return out + _sse(self._head(obj) | {"choices": [choice]})

    def closing(self) -> bytes:
        out = b""
        if self.include_usage:
            obj = "chat.completion.chunk" if self.gen.kind == "chat" else "text_completion"
            out += _sse(self._head(obj) | {"choices": [], "usage": self.usage()})
        return out + b"data: [DONE]\n\n"

    # ---- one body ------------------------------------------------------------------------------

    def body(self) -> bytes:
        text = "".join(self.text)
        choice: dict[str, Any] = {"index": 0}
        if self.gen.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
        else:
            choice["text"] = text
        choice |= {"logprobs": None, "finish_reason": self.finish_reason, "stop_reason": self.stop_reason}
        if self.want_ids:
            if self.gen.kind == "completion":
                choice["prompt_token_ids"] = self.gen.prompt_ids
            choice["token_ids"] = self.token_ids
        obj = "chat.completion" if self.gen.kind == "chat" else "text_completion"
        out = self._head(obj) | {"choices": [choice], "usage": self.usage()}
        if self.gen.kind == "chat" and self.want_ids:
            out["prompt_token_ids"] = self.gen.prompt_ids
        return orjson.dumps(out)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
