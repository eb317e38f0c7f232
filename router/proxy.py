"""The request path: admit, send to an engine, relay the answer; retry on connection failures.

An unsliced request is one engine call, repeated only when an instance cannot be reached before the
first byte (the request goes to another instance); its bytes are relayed unchanged. A request of a
model with `slice_tokens` set goes to `sliced_path.serve_sliced` instead, which runs it as several
engine calls, each admitted and placed afresh (`continuation.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from flotilla.openaihttp import read_body, wait_disconnect
from flotilla.router.admission import Admission, Lease
from flotilla.router.errors import ApiError
from flotilla.router.failover import eject_for_retry
from flotilla.router.features import extract, prompt_text
from flotilla.router.hints import Hints, read_hints
from flotilla.router.metrics import RouterMetrics
from flotilla.router.policies import RequestFeatures
from flotilla.router.prediction import Estimate, LengthPredictor
from flotilla.router.slicing.continuation import SliceRunner
from flotilla.router.slicing.decisions import unsliceable_reason
from flotilla.router.slicing.http_path import serve_sliced
from flotilla.router.upstream import EngineUnreachable, Upstream, UpstreamResponse
from flotilla.router.usage import stream_usage_tokens, usage_tokens

log = logging.getLogger("flotilla.router.request")

CLIENT_ESTIMATE = "client"
"""`Estimate.predictor` of a client's own output-length estimate (`hints.py`)."""
PATHS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}
_FORWARDED_HEADERS = ("authorization",)


@dataclass
class _Call:
    """One client request's context along the path."""

    rid: str
    start: float
    model: str = ""
    features: RequestFeatures | None = None
    estimate: Estimate | None = None
    ttft: float | None = None


@dataclass
class EngineReply:
    lease: Lease
    status: int
    content_type: str
    body: bytes = b""
    stream: UpstreamResponse | None = None
    first_chunk: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    first_byte_at: float = 0.0


def parse_body(raw: bytes, decoded: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The body's JSON object and model; `decoded`: that object, already decoded from `raw` by
    the auth gate (then `raw` is not decoded again)."""
    body: Any = decoded
    if body is None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise ApiError(400, f"invalid JSON body: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "`model` is required and must be a string", param="model")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise ApiError(400, "`stream` must be a boolean", param="stream")
    return body, model


class RequestPath:
    def __init__(
        self,
        admission: Admission,
        client: Upstream,
        metrics: RouterMetrics,
        predictor: LengthPredictor,
        *,
        max_attempts: int,
        request_timeout_s: float,
        max_body_bytes: int,
        prefix_block_chars: int,
        on_eject: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        slicer: SliceRunner | None = None,
        slice_tokens_of: Callable[[str], int] | None = None,
        client_hints: bool = True,
    ) -> None:
        self._client_hints = client_hints
        self._slicer = slicer
        self._slice_tokens_of = slice_tokens_of
        self._admission = admission
        self._client = client
        self._metrics = metrics
        self._predictor = predictor
        self._max_attempts = max_attempts
        self._timeout = request_timeout_s
        self._max_body = max_body_bytes
        self._block_chars = prefix_block_chars
        self._on_eject = on_eject
        self._clock = clock

    async def handle(self, request: Request, kind: str, decoded: dict[str, Any] | None) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        call = _Call(rid, self._clock())
        try:
            raw = await read_body(request, self._max_body)
            body, call.model = parse_body(raw, decoded)
            hints = read_hints(request.headers, body) if self._client_hints else Hints()
            features = hints.apply(extract(kind, body, call.model, block_chars=self._block_chars))
            told = hints.estimate(features)
            if told is not None:  # the client's estimate: nothing to predict
                call.estimate = Estimate(told, predictor=CLIENT_ESTIMATE)
            else:
                call.estimate = await self._predictor.estimate(features, prompt_text(kind, body))
            call.features = replace(features, predicted_output_tokens=call.estimate.tokens)
            stream = body.get("stream") is True
            headers = {"content-type": "application/json", "x-request-id": rid}
            for h in _FORWARDED_HEADERS:
                if h in request.headers:
                    headers[h] = request.headers[h]
            slice_tokens = self._slice_tokens_of(call.model) if self._slice_tokens_of else 0
            if self._slicer is not None and slice_tokens > 0:
                reason = unsliceable_reason(kind, body)
                if reason is None:
                    return await self._sliced(
                        request,
                        call,
                        kind=kind,
                        body=body,
                        headers=headers,
                        stream=stream,
                        slice_tokens=slice_tokens,
                    )
                log.debug("request runs whole", extra={"request_id": rid, "reason": reason})
            opening = asyncio.create_task(self._open(call, PATHS[kind], raw, headers, stream))
            watcher = asyncio.create_task(wait_disconnect(request))
            try:
                async with asyncio.timeout(self._timeout):
                    done, _ = await asyncio.wait({opening, watcher}, return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                raise ApiError(504, f"no answer within {self._timeout:g}s") from None
            finally:
                watcher.cancel()
                if not opening.done():
                    opening.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ApiError):
                        await opening
            if opening not in done:
                raise ApiError(499, "client closed the request")
            reply = opening.result()
        except ApiError as e:
            self._finish(call, e.status, None, error=e.message)
            return e.response(rid)
        call.ttft = reply.first_byte_at - call.start
        self._metrics.ttft.labels(call.model).observe(call.ttft)
        out_headers = {"x-request-id": rid}
        if reply.stream is None:
            reply.lease.release()
            tokens = usage_tokens(reply.body, "completion_tokens")
            self._finish(call, reply.status, reply.lease, output_tokens=tokens)
            return Response(
                reply.body, status_code=reply.status, media_type=reply.content_type, headers=out_headers
            )
        return StreamingResponse(
            self._relay(call, reply),
            status_code=reply.status,
            media_type=reply.content_type,
            headers=out_headers,
        )

    async def _sliced(
        self,
        request: Request,
        call: _Call,
        *,
        kind: str,
        body: dict[str, Any],
        headers: dict[str, str],
        stream: bool,
        slice_tokens: int,
    ) -> Response:
        assert self._slicer is not None and call.features is not None

        def finish(
            status: int, error: str | None, tokens: int | None, lease: Lease | None, ttft_at: float | None
        ) -> None:
            if ttft_at is not None and call.ttft is None:
                call.ttft = ttft_at - call.start
                self._metrics.ttft.labels(call.model).observe(call.ttft)
            self._finish(call, status, lease, error=error, output_tokens=tokens)

        return await serve_sliced(
            self._slicer,
            request,
            rid=call.rid,
            kind=kind,
            body=body,
            features=call.features,
            slice_tokens=slice_tokens,
            headers=headers,
            stream=stream,
            deadline=call.start + self._timeout,
            clock=self._clock,
            finish=finish,
        )

    async def _open(
        self, call: _Call, path: str, raw: bytes, headers: dict[str, str], stream: bool
    ) -> EngineReply:
        """Admit and send; an instance that cannot be reached before the first byte is ejected and
        the request goes to another one (the client has seen nothing yet)."""
        features = call.features
        assert features is not None
        tried: set[str] = set()
        last_error = ""
        for attempt in range(self._max_attempts):
            late = call.estimate.late if call.estimate is not None else None
            lease = await self._admission.acquire(features, frozenset(tried), late=late)
            record = lease.record
            resp: UpstreamResponse | None = None
            try:
                resp = await self._client.post(record.url + path, raw, headers)
                if stream and resp.status == 200:
                    chunks = resp.chunks()
                    try:
                        first = await anext(chunks, b"")
                    except (aiohttp.ClientError, TimeoutError) as e:
                        raise EngineUnreachable(repr(e)) from e
                    return EngineReply(
                        lease,
                        200,
                        resp.content_type,
                        stream=resp,
                        first_chunk=first,
                        chunks=chunks,
                        first_byte_at=self._clock(),
                    )
                data = await resp.read()
                return EngineReply(
                    lease, resp.status, resp.content_type, body=data, first_byte_at=self._clock()
                )
            except EngineUnreachable as e:
                if resp is not None:
                    resp.abort()
                lease.release()
                eject_for_retry(record, tried, features.model, metrics=self._metrics, on_eject=self._on_eject)
                last_error = f"{record.id}: {e}"
                log.warning(
                    "engine unreachable, retrying elsewhere",
                    extra={
                        "request_id": call.rid,
                        "instance": record.id,
                        "attempt": attempt,
                        "error": str(e),
                    },
                )
            except BaseException:
                if resp is not None:
                    resp.abort()
                lease.release()
                raise
        raise ApiError(
            502, f"no instance could be reached after {self._max_attempts} attempts ({last_error})"
        )

    async def _relay(self, call: _Call, reply: EngineReply) -> AsyncIterator[bytes]:
        assert reply.stream is not None and reply.chunks is not None
        lease = reply.lease
        status = 200
        error = None
        usage: int | None = None
        try:
            lease.progress(reply.first_chunk.count(b"data: "))
            yield reply.first_chunk
            try:
                async with asyncio.timeout(max(0.0, call.start + self._timeout - self._clock())):
                    async for chunk in reply.chunks:
                        # vLLM streams one token per event: events are the progress measure.
                        lease.progress(chunk.count(b"data: "))
                        if (tokens := stream_usage_tokens(chunk, "completion_tokens")) is not None:
                            usage = tokens  # the usage chunk (include_usage)
                        yield chunk
            except (aiohttp.ClientError, TimeoutError) as e:
                status, error = (504, "timeout") if isinstance(e, TimeoutError) else (502, repr(e))
                err = ApiError(status, f"engine stream ended abnormally: {error}").body()
                yield b"data: " + err + b"\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            status, error = 499, "client disconnected"
            raise
        finally:
            reply.stream.abort()  # a no-op once the body was read to the end
            lease.release()
            if usage is None and status == 200:
                # Without include_usage: one event per token, less the [DONE] event.
                usage = max(0, lease.streamed - 1)
            self._finish(call, status, lease, error=error, output_tokens=usage)

    def _finish(
        self,
        call: _Call,
        status: int,
        lease: Lease | None,
        *,
        error: str | None = None,
        output_tokens: int | None = None,
    ) -> None:
        model, ttft = call.model, call.ttft
        estimate = call.estimate
        # A client's estimate says nothing of the predictor's quality: not observed (metrics, log).
        observed = estimate is not None and estimate.predictor != CLIENT_ESTIMATE
        if status == 200 and output_tokens is not None and call.features and estimate and observed:
            self._predictor.observe(call.features, estimate, output_tokens)
        e2e = self._clock() - call.start
        # Bad requests may name any model: keep such names out of the label set.
        label = "" if status in (400, 404, 413) else model
        self._metrics.requests.labels(label, str(status)).inc()
        if lease is not None:
            self._metrics.e2e.labels(model).observe(e2e)
        log.info(
            "request",
            extra={
                "request_id": call.rid,
                "model": model,
                "status": status,
                "instance": lease.record.id if lease else None,
                "ttft_s": round(ttft, 6) if ttft is not None else None,
                "e2e_s": round(e2e, 6),
                "streamed_events": lease.streamed if lease else None,
                "error": error,
            },
        )
