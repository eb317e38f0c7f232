"""The HTTP side of a sliced request: first piece before the status line, then stream or body.

As on the unsliced path, nothing is sent to the client until the first slice has produced output,
so an engine error or a full queue is still an ordinary HTTP error; after that, failures become an
error event at the end of the stream. The whole request, over all its slices, is bounded by
`request_timeout_s`, and a client that goes away stops the slice in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from flotilla.openaihttp import wait_disconnect
from flotilla.router.admission import Lease
from flotilla.router.errors import ApiError
from flotilla.router.policies import RequestFeatures
from flotilla.router.slicing.continuation import Piece, SliceFailed, SliceRunner
from flotilla.router.slicing.http_output import SliceOutput

T = TypeVar("T")
# finish(status, error, output_tokens, last lease, time of the first output)
Finish = Callable[[int, str | None, int | None, Lease | None, float | None], None]


async def _guarded(request: Request, aw: Awaitable[T], deadline_s: float) -> T:
    """`aw`'s result, unless the client leaves (499) or the deadline passes (504) first."""

    async def run() -> T:
        return await aw

    task = asyncio.create_task(run())
    watcher = asyncio.create_task(wait_disconnect(request))
    try:
        async with asyncio.timeout(max(0.0, deadline_s)):
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        raise ApiError(504, "no answer in time") from None
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApiError, SliceFailed):
                await task
    if task not in done:
        raise ApiError(499, "client closed the request")
    return task.result()


async def serve_sliced(
    runner: SliceRunner,
    request: Request,
    *,
    rid: str,
    kind: str,
    body: dict[str, Any],
    features: RequestFeatures,
    slice_tokens: int,
    headers: Mapping[str, str],
    stream: bool,
    deadline: float,
    clock: Callable[[], float],
    finish: Finish,
) -> Response:
    gen = runner.generation(kind, body, features, slice_tokens)
    out = SliceOutput(gen, rid)
    pieces = runner.pieces(gen, rid, headers)
    out_headers = {"x-request-id": rid}

    def instance() -> Lease | None:
        return gen.last_lease

    def failed(e: SliceFailed | ApiError, ttft_at: float | None) -> Response:
        """The error answer before any byte was sent: the engine's own, or the router's."""
        if isinstance(e, SliceFailed):
            finish(e.status, f"engine answered {e.status}", None, instance(), ttft_at)
            return Response(e.body, status_code=e.status, media_type=e.content_type, headers=out_headers)
        finish(e.status, e.message, None, instance(), ttft_at)
        return e.response(rid)

    try:
        first = await _guarded(request, anext(pieces), deadline - clock())
    except (SliceFailed, ApiError) as e:
        return failed(e, None)
    except StopAsyncIteration:
        finish(502, "no output", None, instance(), None)
        return ApiError(502, "the engine produced no output").response(rid)
    ttft_at = clock()
    if not stream:

        async def rest() -> None:
            out.add(first)
            async for piece in pieces:
                out.add(piece)

        try:
            await _guarded(request, rest(), deadline - clock())
        except (SliceFailed, ApiError) as e:
            return failed(e, ttft_at)
        finish(200, None, out.completion_tokens, instance(), ttft_at)
        return Response(out.body(), media_type="application/json", headers=out_headers)

    async def relay() -> AsyncIterator[bytes]:
        status, error = 200, None
        try:
            yield out.events(first, first=True)
            try:
                async with asyncio.timeout(max(0.0, deadline - clock())):
                    piece: Piece
                    async for piece in pieces:
                        yield out.events(piece, first=False)
                yield out.closing()
            except (SliceFailed, ApiError, TimeoutError) as e:
                if isinstance(e, TimeoutError):
                    status, error = 504, "timeout"
                else:
                    status, error = e.status, str(e)
                yield b"data: " + ApiError(status, f"request ended abnormally: {error}").body() + b"\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            status, error = 499, "client disconnected"
            raise
        finally:
            await pieces.aclose()
            finish(status, error, out.completion_tokens if status == 200 else None, instance(), ttft_at)

    return StreamingResponse(relay(), media_type="text/event-stream", headers=out_headers)
