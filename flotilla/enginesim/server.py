"""vLLM's OpenAI-compatible HTTP surface over the simulated engine (Starlette).

Response shapes follow vLLM's server: `stop_reason` next to `finish_reason`, `return_token_ids`
adding `prompt_token_ids` (on the completion choice, or on the chat response) and per-choice
`token_ids` (EOS included, as vLLM does), streamed usage in a final chunk with no choices when
`stream_options.include_usage` is set, and OpenAI error objects for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flotilla.enginesim.chat_template import render
from flotilla.enginesim.engine import Engine
from flotilla.enginesim.protocol import ChatCompletionRequest, CompletionRequest, _Sampling
from flotilla.enginesim.sequence import SamplingParams, Sequence, TokenEvent
from flotilla.openaihttp import ApiError, read_body, wait_disconnect

MAX_BODY_BYTES = 32 * 1024 * 1024


def _json(obj: Any) -> Response:
    return Response(orjson.dumps(obj), media_type="application/json")


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@dataclass
class _Generation:
    """One client request: its prompts, sequences and the queue the engine reports into."""

    request_id: str
    kind: str  # "completion" or "chat"
    prompts: list[list[int]]
    n: int
    params: SamplingParams
    return_token_ids: bool
    include_usage: bool
    continuous_usage: bool
    sink: asyncio.Queue[TokenEvent] = field(default_factory=asyncio.Queue)
    seqs: list[Sequence] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)

    def completion_tokens(self) -> int:
        return sum(s.num_output for s in self.seqs)

    def usage(self) -> dict[str, Any]:
        c = self.completion_tokens()
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + c,
            "completion_tokens": c,
            "prompt_tokens_details": None,
        }


class EngineServer:
    def __init__(
        self, engine: Engine, *, model_name: str, seed: int = 0, clock: Callable[[], float] = time.monotonic
    ):
        self.engine = engine
        self.model_name = model_name
        self._rng = random.Random(seed)
        self._clock = clock
        self._created = int(time.time())

    def app(self, *, on_startup: Callable[[], Awaitable[None]] | None = None) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            task = asyncio.create_task(self.engine.run(), name="engine-loop")
            if on_startup is not None:
                await on_startup()
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    # ---- simple endpoints ------------------------------------------------------------------

    async def health(self, _: Request) -> Response:
        return Response(status_code=200)

    async def models(self, _: Request) -> Response:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self._created,
            "owned_by": "vllm",
            "root": self.model_name,
            "parent": None,
            "max_model_len": self.engine.limits.max_model_len,
        }
        return _json({"object": "list", "data": [card]})

    async def metrics(self, _: Request) -> Response:
        return Response(generate_latest(self.engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def detokenize(self, request: Request) -> Response:
        """vLLM's `/detokenize`: `{"model", "tokens"}` -> `{"prompt": text}`."""
        try:
            body = orjson.loads(await read_body(request, MAX_BODY_BYTES))
            tokens = body.get("tokens") if isinstance(body, dict) else None
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                raise ApiError(400, "`tokens` must be a list of token ids", param="tokens")
            if not self.engine.tokenizer.is_valid(tokens):
                raise ApiError(400, "token id out of range", param="tokens")
        except orjson.JSONDecodeError as e:
            return ApiError(400, f"invalid JSON body: {e}").response()
        except ApiError as e:
            return e.response()
        return _json({"prompt": self.engine.tokenizer.decode(tokens)})

    # ---- generation endpoints --------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def _generate(self, request: Request, kind: str) -> Response:
        try:
            gen, stream = await self._parse(request, kind)
        except ApiError as e:
            return e.response()
        self._start(gen)
        if stream:
            return StreamingResponse(self._stream(gen), media_type="text/event-stream")
        collect = asyncio.create_task(self._collect(gen))
        disconnect = asyncio.create_task(wait_disconnect(request))
        try:
            done, _ = await asyncio.wait({collect, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
            if not collect.done():
                collect.cancel()
                self._abort(gen)
        if collect not in done:
            return Response(status_code=499)
        return _json(collect.result())

    async def _parse(self, request: Request, kind: str) -> tuple[_Generation, bool]:
        body = await read_body(request, MAX_BODY_BYTES)
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ApiError(400, f"invalid JSON body: {e}") from None
        if not isinstance(raw, dict):
            raise ApiError(400, "the request body must be a JSON object")
        try:
            req: _Sampling = (
                CompletionRequest if kind == "completion" else ChatCompletionRequest
            ).model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            raise ApiError(400, f"{param}: {first['msg']}", param=param or None) from None
        if req.model != self.model_name:
            raise ApiError(404, f"The model `{req.model}` does not exist.", param="model")
        if req.logprobs not in (None, False) or req.top_logprobs:
            raise ApiError(400, "logprobs are not supported by flotilla.enginesim", param="logprobs")
        tok = self.engine.tokenizer
        limits = self.engine.limits
        if isinstance(req, CompletionRequest):
            if req.echo or (req.best_of or 1) > 1 or req.suffix:
                raise ApiError(400, "echo, best_of and suffix are not supported by flotilla.enginesim")
            try:
                prompts = [tok.encode(p) if isinstance(p, str) else p for p in req.prompts()]
            except ValueError as e:
                raise ApiError(400, str(e), param="prompt") from None
            max_tokens = req.max_tokens or 16
            prefix = "cmpl"
        else:
            assert isinstance(req, ChatCompletionRequest)
            prompts = [tok.encode(render(req.messages, add_generation_prompt=req.add_generation_prompt))]
            max_tokens = (
                req.max_completion_tokens or req.max_tokens or max(1, limits.max_model_len - len(prompts[0]))
            )
            prefix = "chatcmpl"
        for p in prompts:
            if not p:
                raise ApiError(400, "the prompt must contain at least one token", param="prompt")
            if not tok.is_valid(p):
                raise ApiError(400, f"token ids must lie in [0, {tok.vocab_size})", param="prompt")
            if len(p) + max_tokens > limits.max_model_len:
                raise ApiError(
                    400,
                    f"This model's maximum context length is {limits.max_model_len} tokens. However, you "
                    f"requested {len(p) + max_tokens} tokens ({len(p)} in the messages, {max_tokens} in the "
                    "completion). Please reduce the length of the messages or completion.",
                    param="max_tokens",
                )
        temperature = 1.0 if req.temperature is None else req.temperature
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            seed=req.seed,
            ignore_eos=req.ignore_eos,
            min_tokens=min(req.min_tokens, max_tokens),
            stop=req.stop_list(),
            stop_token_ids=tuple(req.stop_token_ids or ()),
            include_stop_str_in_output=req.include_stop_str_in_output,
        )
        base = request.headers.get("x-request-id") or uuid.uuid4().hex
        opts = req.stream_options
        gen = _Generation(
            request_id=f"{prefix}-{base}",
            kind=kind,
            prompts=prompts,
            n=req.n,
            params=params,
            return_token_ids=bool(req.return_token_ids),
            include_usage=bool(req.stream and opts and opts.include_usage),
            continuous_usage=bool(req.stream and opts and opts.include_usage and opts.continuous_usage_stats),
        )
        return gen, bool(req.stream)

    def _start(self, gen: _Generation) -> None:
        now = self._clock()
        for i, prompt in enumerate(gen.prompts):
            for j in range(gen.n):
                index = i * gen.n + j
                seed = gen.params.seed
                rng = random.Random(seed + index if seed is not None else self._rng.getrandbits(64))
                seq = Sequence(gen.request_id, index, prompt, gen.params, gen.sink, rng, now)
                gen.seqs.append(seq)
                self.engine.add(seq)

    def _abort(self, gen: _Generation) -> None:
        for seq in gen.seqs:
            self.engine.abort(seq)

    async def _collect(self, gen: _Generation) -> dict[str, Any]:
        texts = [""] * len(gen.seqs)
        finish: list[TokenEvent | None] = [None] * len(gen.seqs)
        pending = len(gen.seqs)
        while pending:
            ev = await gen.sink.get()
            texts[ev.index] += ev.text
            if ev.finish_reason is not None:
                finish[ev.index] = ev
                pending -= 1
        choices = []
        for seq, text, fin in zip(gen.seqs, texts, finish, strict=True):
            assert fin is not None
            choice: dict[str, Any] = {"index": seq.index}
            if gen.kind == "completion":
                choice["text"] = text
            else:
                choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
            choice |= {"logprobs": None, "finish_reason": fin.finish_reason, "stop_reason": fin.stop_reason}
            if gen.return_token_ids:
                if gen.kind == "completion":
                    choice["prompt_token_ids"] = seq.prompt_ids
                choice["token_ids"] = seq.output_ids
            choices.append(choice)
        body: dict[str, Any] = {
            "id": gen.request_id,
            "object": "text_completion" if gen.kind == "completion" else "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": gen.usage(),
        }
        if gen.kind == "chat" and gen.return_token_ids:
            body["prompt_token_ids"] = gen.prompts[0]
        return body

    async def _stream(self, gen: _Generation) -> AsyncIterator[bytes]:
        created = int(time.time())
        obj = "text_completion" if gen.kind == "completion" else "chat.completion.chunk"
        head = {"id": gen.request_id, "object": obj, "created": created, "model": self.model_name}
        pending = len(gen.seqs)
        started = [False] * len(gen.seqs)
        try:
            if gen.kind == "chat":
                for seq in gen.seqs:
                    first = {"index": seq.index, "delta": {"role": "assistant", "content": ""}}
                    first |= {"logprobs": None, "finish_reason": None}
                    chunk = head | {"choices": [first]}
                    if gen.return_token_ids and seq.index == 0:
                        chunk["prompt_token_ids"] = gen.prompts[0]
                    yield _sse(chunk)
            while pending:
                ev = await gen.sink.get()
                seq = gen.seqs[ev.index]
                if ev.finish_reason is not None:
                    pending -= 1
                elif not ev.text and not gen.return_token_ids:
                    continue  # text held back for a possible stop string: nothing to say yet
                choice: dict[str, Any] = {"index": ev.index}
                if gen.kind == "completion":
                    choice["text"] = ev.text
                else:
                    choice["delta"] = {"content": ev.text}
                choice |= {"logprobs": None, "finish_reason": ev.finish_reason, "stop_reason": ev.stop_reason}
                if gen.return_token_ids:
                    if gen.kind == "completion" and not started[ev.index]:
                        choice["prompt_token_ids"] = seq.prompt_ids
                    choice["token_ids"] = list(ev.token_ids)
                started[ev.index] = True
                chunk = head | {"choices": [choice]}
                if gen.continuous_usage:
                    chunk["usage"] = gen.usage()
                yield _sse(chunk)
            if gen.include_usage:
                yield _sse(head | {"choices": [], "usage": gen.usage()})
            yield b"data: [DONE]\n\n"
        finally:
            self._abort(gen)
