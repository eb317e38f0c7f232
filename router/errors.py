"""OpenAI-style error responses, one exception type carrying the status."""

from __future__ import annotations

import orjson
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


class ApiError(Exception):
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
