"""HTTP to the engines, behind one small seam.

aiohttp rather than httpx on this path: its C HTTP parser and simpler pool cost a fraction of
httpx's CPU per request, and the proxying itself is the router's main CPU cost. Every error that
means "the engine never answered" becomes `EngineUnreachable`, which the request path retries on
another instance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp


class EngineUnreachable(Exception):
    """No answer came: connection refused or reset, or closed before the response headers."""


class UpstreamResponse:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.content_type = resp.headers.get("content-type", "application/json")

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ClientError) as e:
            raise EngineUnreachable(repr(e)) from e
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; a broken connection raises `aiohttp.ClientError`."""
        async for chunk in self._resp.content.iter_any():
            yield chunk

    def abort(self) -> None:
        """Drop the connection: the engine sees the disconnect and aborts the request."""
        self._resp.close()


class Upstream:
    def __init__(self, *, connect_timeout_s: float) -> None:
        self._connect_timeout = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        # Scrapes get a pool of their own: aiohttp reuses pooled connections oldest first, so a
        # scrape every 0.25 s kept every connection a load burst opened alive forever (found by
        # the soak test); apart, request connections idle out after the keep-alive timeout.
        self._scrape_session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on first use, inside the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """Send and wait for the response headers."""
        try:
            resp = await self.session.post(url, data=body, headers=dict(headers))
        except (TimeoutError, aiohttp.ClientError) as e:
            raise EngineUnreachable(repr(e)) from e
        return UpstreamResponse(resp)

    async def get(self, url: str, timeout_s: float) -> tuple[int, bytes]:
        if self._scrape_session is None:
            self._scrape_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=2, keepalive_timeout=30),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
            async with self._scrape_session.get(url, timeout=timeout) as resp:
                return resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientError) as e:
            raise EngineUnreachable(repr(e)) from e

    async def close(self) -> None:
        for session in (self._session, self._scrape_session):
            if session is not None:
                await session.close()
        self._session = self._scrape_session = None
