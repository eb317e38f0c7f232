"""One client request as several engine calls: generate a slice, continue exactly, fail over.

Each slice is sent streaming with `return_token_ids`, whatever the client asked, so the router
always knows the prompt's token ids and every generated token id as they arrive. A slice that ends
by its own length goes back through admission (the queue, then the policy, steered by
`slicing.place_next_slice`) and continues on some instance with `prompt = prompt_token_ids +
generated ids` on /v1/completions (chat too: the first slice's rendered prompt ids carry the chat
template). If an engine dies mid-slice, the next slice starts from the last token received, on
another instance: the client's stream does not notice. `slice_output.py` turns the pieces into the
client's one answer.

A slice must not end inside a multi-byte character. A byte-level tokenizer splits many characters
over several tokens, and an engine holds back the text of such tokens until the character is
complete; a slice cut there never releases that text, and vLLM's detokenizer, primed with a prompt
that ends mid-character, repeats the whole prompt's text in the next slice's first event
(tokenizers' `DecodeStream(ids=...)`, seen with vLLM 0.32). An event with one token id and some text
ends on a whole character (the engine released text only because nothing was left incomplete),
but an event of several ids (vLLM merges tokens into one event when its HTTP writer falls behind)
or of none of its own text may not. So such ids are held (`slicing.PendingIds`) until a whole
character is certain. At the next slice they are kept through the one whose text the engine last
streamed, which the engine's `/detokenize` finds inside a merged event, and the rest (all of
them ending inside a character, or special tokens) are generated again, from a prompt that ends
on a whole character: greedy decoding gives the same tokens, and sampling draws tokens the client
never saw (text goes out as it comes; only ids wait). Special tokens (`<unk>`, which a random
model generates) need care: the stream skips their text and `/detokenize` spells it out, so half
a character followed by `<unk>` looks whole there while a prompt ending so still echoes; such ids
are recognised and left out of the lookups (`SliceRunner._streamed_text`). The lookup asks the
instance that runs the next slice; if that one cannot be reached, the slice fails over before
anything is settled. The same lookup finds, when a stop string completes inside a merged event,
the token that completed it, so ids and usage match the unsliced run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from flotilla.router.admission import Admission, Lease
from flotilla.router.errors import ApiError
from flotilla.router.failover import eject_for_retry
from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies import InstanceView, RequestFeatures
from flotilla.router.slicing.decisions import (
    CHAT_SAMPLING_KEYS,
    PendingIds,
    RebalanceParams,
    StopScanner,
    continues,
    place_next_slice,
    slice_budget,
    slice_features,
    stop_strings,
)
from flotilla.router.upstream import EngineUnreachable, Upstream, UpstreamResponse

log = logging.getLogger("flotilla.router.request")

_PATHS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}
REPLACEMENT = "\ufffd"
MAX_CHARACTER_TOKENS = 8
"""Most tokens one character is split over (UTF-8 has at most 4 bytes; allow for merges)."""
# Stop strings are the router's alone (`StopScanner`): an engine checking them would hold back
# text it has generated tokens for, and a slice lost mid-way would lose that text with it.
_NOT_SENT = ("max_completion_tokens", "stream_options", "stop")


def _squeezed(text: str) -> str:
    """Text without whitespace: `/detokenize` may clean up spaces (" ." -> ".") that the stream keeps."""
    return "".join(text.split())


class SliceFailed(Exception):
    """An engine answered a slice with an error: the request ends with it."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        super().__init__(f"engine answered {status}")
        self.status = status
        self.body = body
        self.content_type = content_type


@dataclass(frozen=True, slots=True)
class Piece:
    """Output released to the client: text (stop-checked), the token ids that came with it, and
    on the last piece the request's finish reason."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None
    stop_reason: Any = None


class SseParser:
    """Engine SSE bytes -> JSON events (`[DONE]` dropped); chunks may split events anywhere."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buf += chunk
        out: list[dict[str, Any]] = []
        while (end := self._buf.find(b"\n\n")) >= 0:
            block, self._buf = self._buf[:end], self._buf[end + 2 :]
            for line in block.split(b"\n"):
                if line.startswith(b"data: ") and line[6:].strip() != b"[DONE]":
                    out.append(orjson.loads(line[6:]))
        return out


@dataclass
class Generation:
    """The state of one sliced request across its slices."""

    kind: str
    body: dict[str, Any]
    features: RequestFeatures
    slice_tokens: int
    max_tokens: int | None
    scanner: StopScanner
    prompt_ids: list[int] | None = None
    generated: list[int] = field(default_factory=list)
    head: dict[str, Any] = field(default_factory=dict)
    """id, created and model of the first engine event: the client's one response identity."""
    current: str | None = None
    pending: PendingIds = field(default_factory=PendingIds)
    """Generated ids not yet known to end on a whole character (see the module docstring)."""
    redo: int = 0
    """Ids the last slice ended with inside a character: dropped, to be generated again."""
    special: dict[int, bool] = field(default_factory=dict)
    """Held ids found to be special tokens (True) or not (`SliceRunner._streamed_text`)."""
    slices: int = 0
    last_lease: Lease | None = None
    first_piece_at: float | None = None

    @property
    def remaining(self) -> int | None:
        return None if self.max_tokens is None else self.max_tokens - len(self.generated)

    @property
    def context_tokens(self) -> int:
        return len(self.prompt_ids or ()) + len(self.generated)

    def slice_request(self, budget: int) -> tuple[str, dict[str, Any]]:
        """The engine path and body of the next slice."""
        min_tokens = self.body.get("min_tokens")
        if self.prompt_ids is None:  # first slice (or a retry of it): the client's own request
            out = {k: v for k, v in self.body.items() if k not in _NOT_SENT}
            path = _PATHS[self.kind]
        else:
            if self.kind == "chat":
                out = {k: self.body[k] for k in CHAT_SAMPLING_KEYS if k in self.body and k not in _NOT_SENT}
                out["model"] = self.body["model"]
            else:
                out = {k: v for k, v in self.body.items() if k not in _NOT_SENT}
            out["prompt"] = self.prompt_ids + self.generated
            path = _PATHS["completion"]
        out |= {"max_tokens": budget, "stream": True, "return_token_ids": True}
        if isinstance(min_tokens, int):
            out["min_tokens"] = max(0, min(budget, min_tokens - len(self.generated)))
        return path, out


def parse_event(kind: str, ev: dict[str, Any]) -> tuple[str, list[int], str | None, Any, list[int] | None]:
    """(text, token ids, finish_reason, stop_reason, prompt token ids) of one engine event."""
    prompt_ids = ev.get("prompt_token_ids")
    choices = ev.get("choices") or []
    if not choices:
        return "", [], None, None, prompt_ids
    c = choices[0]
    text = c.get("text")
    if text is None:
        text = (c.get("delta") or {}).get("content") or ""
    prompt_ids = c.get("prompt_token_ids", prompt_ids)
    return text, list(c.get("token_ids") or ()), c.get("finish_reason"), c.get("stop_reason"), prompt_ids


class SliceRunner:
    """Runs a request slice by slice; shared by all requests (built once, like `RequestPath`)."""

    def __init__(
        self,
        admission: Admission,
        client: Upstream,
        metrics: RouterMetrics,
        *,
        rebalance: RebalanceParams,
        max_attempts: int,
        on_eject: Callable[[str], None],
    ) -> None:
        self._admission = admission
        self._client = client
        self._metrics = metrics
        self._rebalance = rebalance
        self._max_attempts = max_attempts
        self._on_eject = on_eject

    def generation(
        self, kind: str, body: dict[str, Any], features: RequestFeatures, slice_tokens: int
    ) -> Generation:
        return Generation(
            kind=kind,
            body=body,
            features=features,
            slice_tokens=slice_tokens,
            max_tokens=features.max_tokens,
            scanner=StopScanner(stop_strings(body) or []),
        )

    async def pieces(
        self, gen: Generation, rid: str, headers: Mapping[str, str]
    ) -> AsyncGenerator[Piece, None]:
        """The request's output, piece by piece; the last piece carries the finish reason."""
        tried: set[str] = set()
        failures = 0
        failed_over = False
        predicted = gen.features.predicted_output_tokens or 0.0
        while True:
            if gen.generated and gen.prompt_ids is None:
                raise ApiError(502, "cannot resume: the engine returned no prompt token ids")
            budget = slice_budget(gen.slice_tokens, gen.remaining, redo=len(gen.pending.ids))
            features = slice_features(
                gen.features,
                predicted,
                slice_tokens=gen.slice_tokens,
                budget=budget,
                context_tokens=gen.context_tokens or gen.features.prompt_tokens,
                generated=len(gen.generated),
            )
            lease = await self._admission.acquire(features, frozenset(tried), self._steer(gen, budget))
            gen.last_lease = lease
            record = lease.record
            resp: UpstreamResponse | None = None
            produced = 0
            finish: str | None = None
            stop_reason: Any = None
            try:
                if gen.pending.ids:  # the last slice ended (or its engine died) with ids held
                    settled = await self._settle(gen, record.url, headers)
                    if settled:
                        yield Piece("", tuple(settled))
                    budget = slice_budget(gen.slice_tokens, gen.remaining, redo=gen.redo)
                placement = (
                    "first"
                    if gen.slices == 0
                    else "failover"
                    if failed_over
                    else "stay"
                    if record.id == gen.current
                    else "move"
                )
                self._metrics.slices.labels(gen.features.model, placement).inc()
                gen.slices += 1
                path, body = gen.slice_request(budget)
                resp = await self._client.post(record.url + path, orjson.dumps(body), headers)
                if resp.status != 200:
                    raise SliceFailed(resp.status, await resp.read(), resp.content_type)
                parser = SseParser()
                async for chunk in resp.chunks():
                    for ev in parser.feed(chunk):
                        if "error" in ev:
                            raise SliceFailed(502, orjson.dumps(ev))
                        if not gen.head and "id" in ev:
                            gen.head = {k: ev.get(k) for k in ("id", "created", "model")}
                        text, ids, fin, reason, prompt_ids = parse_event(gen.kind, ev)
                        if prompt_ids is not None and gen.prompt_ids is None:
                            gen.prompt_ids = list(prompt_ids)
                        produced += len(ids)
                        lease.progress(len(ids))
                        if fin is not None:
                            finish, stop_reason = fin, reason
                        held_before = len(gen.scanner.pending)
                        out, matched = gen.scanner.feed(text)
                        if matched is not None:  # a stop string, possibly across a slice boundary
                            through = len(out) + len(matched) - held_before  # of this event's text
                            ids = await self._through_stop(
                                gen, record.url, headers, ids=ids, text=text, through=through
                            )
                            gen.generated.extend(ids)
                            yield Piece(out, tuple(ids), "stop", matched)
                            return
                        ids = gen.pending.add(ids, text)
                        gen.generated.extend(ids)
                        if out or ids:
                            yield Piece(out, tuple(ids))
                if finish is None:
                    raise EngineUnreachable("the engine closed the stream before finishing")
            except (EngineUnreachable, aiohttp.ClientError) as e:
                eject_for_retry(
                    record, tried, gen.features.model, metrics=self._metrics, on_eject=self._on_eject
                )
                failures += 1
                failed_over = True
                gen.current = None
                log.warning(
                    "engine lost mid-request, continuing elsewhere",
                    extra={
                        "request_id": rid,
                        "instance": record.id,
                        "tokens": len(gen.generated),
                        "error": repr(e),
                    },
                )
                if failures >= self._max_attempts:
                    raise ApiError(
                        502, f"no instance could continue after {failures} attempts ({e!r})"
                    ) from e
                continue
            finally:
                if resp is not None:
                    resp.abort()
                lease.release()
            failures = 0
            failed_over = False
            # Whether the request goes on counts the held ids as generated (they may be all its
            # own limit allows); if it goes on, the next slice settles them first.
            left = None if gen.remaining is None else gen.remaining - len(gen.pending.ids)
            if not continues(finish, produced, budget, left) or gen.prompt_ids is None:
                if gen.prompt_ids is None and finish == "length":
                    # An engine without `return_token_ids`: nothing to continue from.
                    log.warning(
                        "engine returned no prompt token ids, slicing stopped", extra={"request_id": rid}
                    )
                last = gen.pending.take()  # the request's end: its last ids, as unsliced
                gen.generated.extend(last)
                yield Piece(gen.scanner.flush(), tuple(last), finish, stop_reason)
                return
            gen.current = record.id

    async def _detokenize(
        self, url: str, gen: Generation, ids: list[int], headers: Mapping[str, str]
    ) -> str | None:
        """The engine's own text for `ids` (vLLM's `/detokenize`); None if it has no such endpoint
        or answers something else. An engine that cannot be reached raises `EngineUnreachable`:
        the caller fails over and asks another, rather than guessing from an engine that died
        (a guess that keeps an incomplete character makes vLLM echo the prompt, see above)."""
        if not ids:
            return ""
        body = orjson.dumps({"model": gen.body.get("model"), "tokens": ids})
        resp = await self._client.post(url + "/detokenize", body, headers)
        data = await resp.read()
        try:
            text = orjson.loads(data).get("prompt") if resp.status == 200 else None
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return text if isinstance(text, str) else None

    async def _streamed_text(
        self, url: str, gen: Generation, ids: list[int], headers: Mapping[str, str]
    ) -> str | None:
        """The text the stream shows for `ids`: `/detokenize` keeps special tokens (`<unk>`) that
        the stream skips, so those are left out. A held id that came alone with no text is special
        if it decodes, on its own, to whole text: a token that ends inside a character decodes to
        U+FFFD at its end, and any other would have released text. (Special tokens inside merged
        events stay unknown; `_settle` copes by matching the streamed text.)"""
        for t in gen.pending.alone - gen.special.keys():
            alone = await self._detokenize(url, gen, [t], headers)
            if alone is None:
                return None
            gen.special[t] = bool(alone) and not alone.endswith(REPLACEMENT)
        return await self._detokenize(url, gen, [t for t in ids if not gen.special.get(t)], headers)

    async def _settle(self, gen: Generation, url: str, headers: Mapping[str, str]) -> list[int]:
        """Resolve the held ids before the next slice: keep those through the one whose text the
        engine last streamed (returned, for release) and drop the rest, which the next slice
        generates again. The kept ids end where the engine itself found a whole character; any
        later id streamed no text, so generating it again shows the client nothing twice.

        Which held id streamed the text last is plain for one-id events; inside a merged event
        the engine's decoding tells: the longest prefix whose text ends with the held text and not
        in an incomplete character. Not merely the longest prefix that ends on a whole character:
        a special token after half a character (`[符 + lead byte, <unk>]`) looks whole to
        `/detokenize`, yet a prompt ending so still makes vLLM echo it."""
        held, text = gen.pending.ids, gen.pending.text
        keep = 0  # no held event streamed text: all of them are generated again
        if text:
            last = len(held) - gen.pending.textless_tail  # through the last event with text
            keep = last  # the estimate without `/detokenize`: that event whole
            for k in range(last, max(0, last - MAX_CHARACTER_TOKENS), -1):
                decoded = await self._streamed_text(url, gen, held[:k], headers)
                if decoded is None:
                    break
                if _squeezed(decoded).endswith(_squeezed(text)) and not decoded.endswith(REPLACEMENT):
                    keep = k
                    break
        kept = gen.pending.take()[:keep]
        gen.redo = len(held) - keep
        gen.generated.extend(kept)
        return kept

    async def _through_stop(
        self,
        gen: Generation,
        url: str,
        headers: Mapping[str, str],
        *,
        ids: list[int],
        text: str,
        through: int,
    ) -> list[int]:
        """The held ids and this event's, up to the token that completed the stop string, which
        ends `through` characters into the event's `text` (the rest were generated past it)."""
        if len(ids) == 1 and not gen.pending.ids and text:  # one token completed it: exact
            return ids
        through_stop = _squeezed((gen.pending.text + text)[: len(gen.pending.text) + through])
        candidates = gen.pending.ids + ids
        found = candidates
        for upto in range(1, len(candidates)):
            try:
                decoded = await self._streamed_text(url, gen, candidates[:upto], headers)
            except EngineUnreachable:
                # The request ends here whatever: its text is exact, only a few ids generated
                # past the stop string may be counted (as if the engine had no `/detokenize`).
                break
            if decoded is None:
                break
            # The streamed text through the stop, not merely as long: a special token inside a
            # merged event is spelled out by `/detokenize` (then all the ids count).
            if _squeezed(decoded).startswith(through_stop):
                found = candidates[:upto]
                break
        gen.pending.take()  # only now: `_streamed_text` reads which held ids came alone
        return found

    def _steer(
        self, gen: Generation, budget: int
    ) -> Callable[[list[InstanceView]], list[InstanceView]] | None:
        if gen.current is None:
            return None
        current, context = gen.current, gen.context_tokens

        def steer(ranked: list[InstanceView]) -> list[InstanceView]:
            return place_next_slice(
                current, ranked, slice_tokens=budget, context_tokens=context, params=self._rebalance
            )

        return steer
