"""What the router sends to the engine: the client's body unchanged, plus the request id."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flotilla.enginesim.process import free_port


@contextlib.asynccontextmanager
async def echo_engine() -> AsyncIterator[str]:
    """An engine that answers with what it received (body and the headers the router sets)."""

    async def echo(request: Request) -> Response:
        seen = {
            "body": (await request.body()).decode(),
            "request_id": request.headers.get("x-request-id"),
            "authorization": request.headers.get("authorization"),
        }
        return Response(orjson.dumps(seen), media_type="application/json")

    async def metrics(_: Request) -> Response:
        return Response(b"vllm:num_requests_running 0\n", media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/v1/completions", echo, methods=["POST"]),
            Route("/v1/chat/completions", echo, methods=["POST"]),
            Route("/metrics", metrics),
        ]
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_unknown_fields_and_request_id_pass_through(router_config: Any, serve_router: Any) -> None:
    async with echo_engine() as engine_url:
        instances = [{"url": engine_url, "model": "echo", "name": "e0"}]
        cfg = router_config([], static={"instances": instances})
        raw = (
            b'{"model":"echo","messages":[{"role":"user","content":"hi"}],'
            b'"vendor_knob":{"a":[1,2]},"top_k":3}'
        )
        async with serve_router(cfg) as (_, url), httpx.AsyncClient() as c:
            r = await c.post(
                url + "/v1/chat/completions",
                content=raw,
                headers={"x-request-id": "req-42", "authorization": "Bearer k"},
            )
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    seen = r.json()
    assert seen["body"].encode() == raw, "forwarded byte for byte"
    assert seen["request_id"] == "req-42" and seen["authorization"] == "Bearer k"
