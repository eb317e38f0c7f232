"""Waits with deadlines: each failure says which process, what it waited for, and its log's tail."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable

import httpx

from flotilla.localcluster.process import ManagedProcess


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    what: str,
    process: ManagedProcess | None = None,
    interval_s: float = 0.1,
) -> None:
    """Poll `check` until it returns True; fail early if `process` exits, late after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        if process is not None and not process.running():
            raise process.failure(f"exited while waiting for {what}")
        try:
            if await check():
                return
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            message = f"timed out after {timeout_s:.0f} s waiting for {what}{detail}"
            if process is not None:
                raise process.failure(message)
            raise TimeoutError(message)
        await asyncio.sleep(interval_s)


async def wait_http_ok(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout_s: float,
    process: ManagedProcess | None = None,
    expect_body: str | None = None,
) -> None:
    """Wait until GET `url` answers 200 (and, if given, a body equal to `expect_body`)."""

    async def check() -> bool:
        response = await client.get(url, timeout=2.0)
        return response.status_code == 200 and (expect_body is None or response.text == expect_body)

    await wait_until(check, timeout_s=timeout_s, what=f"GET {url} -> 200", process=process)
