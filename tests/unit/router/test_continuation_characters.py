"""Slice boundaries inside multi-byte characters, against a scripted engine that behaves as vLLM 0.32
does: a token that ends mid-character streams its id with no text, tokens are merged into one event
when the engine's writer falls behind, `/detokenize` decodes ids, and a continuation whose prompt
ends mid-character repeats the prompt's text in its first event (tokenizers' DecodeStream primed
with such a prompt). The router must still return exactly the unsliced text and ids, and stop at
the token that completes a stop string."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from flotilla.router.admission import Admission
from flotilla.router.instances import InstanceSpec, InstanceTable
from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies import RequestFeatures, default_registry
from flotilla.router.policy_book import PolicyBook
from flotilla.router.slicing.continuation import SliceRunner
from flotilla.router.slicing.decisions import RebalanceParams, slice_budget
from flotilla.router.upstream import EngineUnreachable

PROMPT = [1, 2, 3]
ECHO = "<prompt text>"


SPECIAL = 7
"""A special token (`<unk>`): the stream skips its text, `/detokenize` keeps it."""


def script(length: int, *, specials: bool = False) -> list[tuple[int, str]]:
    """The engine's unsliced greedy output: (token id, text of its event). Every third token
    starts a two-token character (no text), the next one completes it. With `specials`, a special
    token (no text) comes between the two, as a random model generates them."""
    out: list[tuple[int, str]] = []
    period = 4 if specials else 3
    for i in range(length):
        if i % period == 1:
            out.append((100 + i, ""))
        elif specials and i % period == 2:
            out.append((SPECIAL, ""))
        elif i % period == period - 1:
            out.append((100 + i, "é" + str(i)))
        else:
            out.append((100 + i, f" w{i}"))
    return out


class Response:
    def __init__(self, events: list[dict[str, Any]], status: int = 200, body: bytes = b"") -> None:
        self.status = status
        self.content_type = "text/event-stream"
        self._events = events
        self._body = body

    async def chunks(self) -> AsyncIterator[bytes]:
        for ev in self._events:
            yield b"data: " + orjson.dumps(ev) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def read(self) -> bytes:
        return self._body

    def abort(self) -> None:
        pass


class ScriptedEngine:
    """Continues `script` from wherever the prompt's generated part leaves it; `merge` tokens go
    into one event; `detokenize=False`: an engine without that endpoint (404)."""

    def __init__(
        self,
        length: int,
        *,
        merge: int = 1,
        detokenize: bool = True,
        first_dies: bool = False,
        specials: bool = False,
    ) -> None:
        self.tokens = script(length, specials=specials)
        self.text_of = dict(self.tokens)
        self.merge = merge
        self.detokenize = detokenize
        self.first_dies = first_dies
        """The instance that served the first slice dies right after it (a killed container)."""
        self.dead: set[str] = set()
        self.calls: list[list[int]] = []

    def incomplete(self, ids: list[int]) -> bool:
        """Whether the ids' text, special tokens skipped (as the stream decodes), ends mid-character."""
        real = [t for t in ids if t != SPECIAL]
        return bool(real) and not self.text_of[real[-1]]

    def decode(self, ids: list[int]) -> str:
        """As `/detokenize` does, from a whole character on: special tokens kept, an incomplete
        character decodes to U+FFFD."""
        text = ""
        for i, t in enumerate(ids):
            if t == SPECIAL:
                text += (
                    "\ufffd" if self.incomplete(ids[:i]) and not text.endswith("\ufffd") else ""
                ) + "<unk>"
            else:
                text += self.text_of[t]
        return text + ("\ufffd" if ids and ids[-1] != SPECIAL and not self.text_of[ids[-1]] else "")

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        req = orjson.loads(body)
        instance = url.split("/v1/", maxsplit=1)[0].removesuffix("/detokenize")
        if instance in self.dead:
            raise EngineUnreachable("connection refused")
        if self.first_dies and not url.endswith("/detokenize"):
            self.dead.add(instance)
            self.first_dies = False
        if url.endswith("/detokenize"):
            if not self.detokenize:
                return Response([], status=404, body=b'{"detail": "Not Found"}')
            return Response([], body=orjson.dumps({"prompt": self.decode(req["tokens"])}))
        prompt = req["prompt"] if isinstance(req["prompt"], list) else PROMPT
        self.calls.append(prompt)
        done = len(prompt) - len(PROMPT)
        assert prompt[len(PROMPT) :] == [t for t, _ in self.tokens[:done]], "continued from other ids"
        mid_character = done > 0 and self.incomplete(prompt[len(PROMPT) :])
        out = self.tokens[done : done + req["max_tokens"]]
        events: list[dict[str, Any]] = []
        for start in range(0, len(out), self.merge):
            group = out[start : start + self.merge]
            text = "".join(t for _, t in group)
            if mid_character and text:
                text, mid_character = ECHO + text, False
            end = done + start + len(group)
            fin = "stop" if end == len(self.tokens) else "length" if end == done + req["max_tokens"] else None
            choice: dict[str, Any] = {"text": text, "token_ids": [t for t, _ in group], "finish_reason": fin}
            if start == 0:
                choice["prompt_token_ids"] = prompt
            events.append({"id": "cmpl-1", "created": 1, "model": "m", "choices": [choice]})
        return Response(events)


def runner(engine: ScriptedEngine, instances: int = 1) -> SliceRunner:
    table = InstanceTable(default_max_inflight=4)
    table.update([InstanceSpec(id=f"i{i}", url=f"http://e{i}", model="m") for i in range(instances)])
    metrics = RouterMetrics(CollectorRegistry())
    admission = Admission(
        table, PolicyBook(default_registry(), "least_request", {}), metrics, rng=random.Random(0)
    )
    return SliceRunner(
        admission, engine, metrics, rebalance=RebalanceParams(), max_attempts=2, on_eject=lambda _: None
    )  # type: ignore[arg-type]


async def run(
    slice_tokens: int,
    engine: ScriptedEngine,
    max_tokens: int | None = None,
    stop: str | None = None,
    instances: int = 1,
) -> tuple[str, list[int], str | None]:
    slicer = runner(engine, instances)
    features = RequestFeatures(model="m", prompt_tokens=3, max_tokens=max_tokens)
    body: dict[str, Any] = {"model": "m", "prompt": "abc"}
    body |= {"max_tokens": max_tokens} if max_tokens else {}
    body |= {"stop": [stop]} if stop else {}
    gen = slicer.generation("completion", body, features, slice_tokens)
    text, ids, finish = "", [], None
    async for piece in slicer.pieces(gen, "r", {}):
        text += piece.text
        ids += piece.token_ids
        finish = piece.finish_reason or finish
    return text, ids, finish


@pytest.mark.parametrize("merge", [1, 2, 3])
@pytest.mark.parametrize("slice_tokens", [1, 2, 3, 4, 5])
async def test_sliced_text_and_ids_equal_unsliced(slice_tokens: int, merge: int) -> None:
    whole = script(20)
    text, ids, finish = await run(slice_tokens, ScriptedEngine(20, merge=merge))
    assert ECHO not in text
    assert text == "".join(t for _, t in whole)
    assert ids == [t for t, _ in whole]
    assert finish == "stop"


@pytest.mark.parametrize("slice_tokens", [1, 2, 4])
async def test_without_detokenize_unmerged_events_still_suffice(slice_tokens: int) -> None:
    whole = script(20)
    text, ids, _ = await run(slice_tokens, ScriptedEngine(20, detokenize=False))
    assert text == "".join(t for _, t in whole) and ids == [t for t, _ in whole]


@pytest.mark.parametrize("merge", [2, 3])
@pytest.mark.parametrize("slice_tokens", [2, 3, 4, 5])
async def test_engine_dead_when_its_held_ids_are_settled(slice_tokens: int, merge: int) -> None:
    """The engine that served a slice dies before the next one: asking it which held ids end a
    whole character fails, and the answer comes from the instance the request fails over to,
    not from a guess (a guess that keeps half a character makes vLLM echo the prompt)."""
    whole = script(20)
    engine = ScriptedEngine(20, merge=merge, first_dies=True)
    text, ids, finish = await run(slice_tokens, engine, instances=2)
    assert engine.dead  # the fault happened
    assert ECHO not in text
    assert text == "".join(t for _, t in whole)
    assert ids == [t for t, _ in whole]
    assert finish == "stop"


@pytest.mark.parametrize("first_dies", [False, True])
@pytest.mark.parametrize("merge", [1, 2, 3])
@pytest.mark.parametrize("slice_tokens", [2, 3, 4, 5])
async def test_special_token_after_half_a_character(slice_tokens: int, merge: int, first_dies: bool) -> None:
    """A special token follows half a character (the CI failure with vLLM: `符` plus a lead byte,
    then `<unk>`). `/detokenize` keeps `<unk>`, so those ids decode to a whole-looking text, but
    the stream skips it and a prompt ending there still ends mid-character: both are generated
    again, and no prompt is echoed."""
    whole = script(24, specials=True)
    engine = ScriptedEngine(24, merge=merge, specials=True, first_dies=first_dies)
    text, ids, finish = await run(slice_tokens, engine, instances=2)
    assert ECHO not in text
    assert text == "".join(t for _, t in whole)
    assert ids == [t for t, _ in whole]
    assert finish == "stop"


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 7, 8])
async def test_limit_inside_a_character_ends_the_request(max_tokens: int) -> None:
    """A client limit that falls inside a character ends there, as unsliced (no text for it),
    rather than regenerating the same textless tail forever."""
    whole = script(20)[:max_tokens]
    text, ids, finish = await run(2, ScriptedEngine(20, merge=2), max_tokens)
    assert ids == [t for t, _ in whole]
    assert text == "".join(t for _, t in whole)
    assert finish == "length"


@pytest.mark.parametrize("merge", [1, 3])
@pytest.mark.parametrize("slice_tokens", [3, 4, 16])
async def test_stop_inside_a_merged_event_ends_at_its_token(slice_tokens: int, merge: int) -> None:
    """The stop string "é5 w6" is completed by token 6, whatever tokens its event also holds."""
    whole = script(20)
    text, ids, finish = await run(slice_tokens, ScriptedEngine(20, merge=merge), stop="é5 w6")
    full = "".join(t for _, t in whole)
    assert text == full[: full.index("é5 w6")]
    assert ids == [t for t, _ in whole[:7]]
    assert finish == "stop"


@pytest.mark.parametrize(("slice_tokens", "merge"), [(3, 1), (4, 1), (16, 1), (3, 3), (4, 3), (16, 2)])
async def test_stop_after_a_special_token_ends_at_its_token(slice_tokens: int, merge: int) -> None:
    """The stop string "é7" is completed by token 7, after half a character and `<unk>`, which
    `/detokenize` spells out but the stream skips: the ids end at token 7, as unsliced. (Not
    where `<unk>` is merged into an event with text before the stop: it stays unknown, and the
    few ids generated past the stop in that event count, as without `/detokenize`.)"""
    whole = script(24, specials=True)
    engine = ScriptedEngine(24, merge=merge, specials=True)
    text, ids, finish = await run(slice_tokens, engine, stop="é7")
    full = "".join(t for _, t in whole)
    assert text == full[: full.index("é7")]
    assert ids == [t for t, _ in whole[:8]]
    assert finish == "stop"


def test_budget_gives_room_past_regenerated_tokens() -> None:
    assert slice_budget(4, None) == 4
    assert slice_budget(4, None, redo=4) == 5  # a slice of only textless tokens still advances
    assert slice_budget(4, 3, redo=4) == 3  # never past the client's own limit
    assert slice_budget(4, 2) == 2
