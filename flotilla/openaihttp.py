"""The edge of an OpenAI-compatible HTTP server: error responses, the bounded body read, disconnects.

The router and enginesim (the engine the tests and benchmarks serve from) both answer OpenAI's
error object, must refuse an unbounded body and notice a client leaving, so they share one copy.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.requests import Request
from starlette.responses import Response

_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    408: "TimeoutError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
    499: "ClientClosedRequest",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}

BODY_READ_TIMEOUT_S = 30.0


class ApiError(Exception):
    """An error answered as OpenAI's error object, with its HTTP status (and Retry-After when set)."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.retry_after = retry_after

    def body(self) -> bytes:
        err = {
            "message": self.message,
            "type": _TYPES.get(self.status, "APIError"),
            "param": self.param,
            "code": self.status,
        }
        return orjson.dumps({"error": err})

    def response(self, request_id: str | None = None) -> Response:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        if request_id:
            headers["X-Request-Id"] = request_id
        return Response(self.body(), status_code=self.status, media_type="application/json", headers=headers)


async def read_body(request: Request, limit: int, timeout_s: float = BODY_READ_TIMEOUT_S) -> bytes:
    """The request body, bounded in size (413) and in time (408).

    The time bound matters because neither uvicorn nor a request timeout (which starts once the
    body is in) stops a client that sends part of a body and then holds the connection open.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body larger than {limit} bytes")
                parts.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"request body not received within {timeout_s:g} s") from None
    return b"".join(parts)


async def wait_disconnect(request: Request) -> None:
    """Returns when the client has gone away (its connection closed)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
