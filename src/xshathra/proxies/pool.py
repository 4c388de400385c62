"""Keep-alive HTTP/1.1 connections to apps' backends, for the proxy caller.

httpcore's own pool walks every connection and every waiting request on each request and each
release: with 50 calls in flight that was 7 to 9 ms of CPU per call (1 ms when sequential), on
a client's connect path. Here idle connections wait in a list per origin and are taken from
its end, so a request costs the same however many are open; the HTTP itself stays httpcore's
(`AsyncHTTPConnection`, one request at a time), and every new connection goes through the
private-address guard (`GuardedNetworkBackend`). How many calls run at once is the caller's
business (its per-app bound); this only bounds the idle connections kept.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import httpcore

from xshathra.outbound.netguard import GuardedNetworkBackend

KEEPALIVE_EXPIRY = 30.0  # seconds an idle connection is kept
MAX_IDLE_PER_ORIGIN = 64
MAX_IDLE = 512  # over all origins: idle sockets (and file descriptors) stay bounded

Origin = tuple[str, str, int]  # scheme, host, port


class ReplyTooLarge(Exception):
    """The backend sent more than the caller accepts."""


class ProxyPool:
    def __init__(
        self, backend: GuardedNetworkBackend, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._backend = backend
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[Origin, list[httpcore.AsyncHTTPConnection]] = {}
        self._idle_total = 0

    async def post(
        self,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        io_timeout: float,
        max_bytes: int,
    ) -> tuple[int, bytes]:
        """POST and read the whole answer: (status, body). Raises httpcore's errors,
        `UnsafeURLError` from the guard, or `ReplyTooLarge`."""
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        origin: Origin = (scheme, host, port)
        connection = await self._take(origin)
        extensions = {
            "timeout": {
                "connect": io_timeout,
                "read": io_timeout,
                "write": io_timeout,
                "pool": io_timeout,
            }
        }
        try:
            # `stream` adds Host and Content-Length, and releases the connection on exit.
            async with connection.stream(
                "POST", url, headers=headers, content=body, extensions=extensions
            ) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_stream():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ReplyTooLarge()
                    chunks.append(chunk)
        except BaseException:
            await connection.aclose()  # its state is unknown: never reused
            raise
        await self._give_back(origin, connection)
        return response.status, b"".join(chunks)

    async def _take(self, origin: Origin) -> httpcore.AsyncHTTPConnection:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()  # the most recently used: least likely to have expired
            self._idle_total -= 1
            if connection.is_available() and not connection.has_expired():
                return connection
            await connection.aclose()
        scheme, host, port = origin
        return httpcore.AsyncHTTPConnection(
            httpcore.Origin(scheme.encode(), host.encode(), port),
            ssl_context=self._ssl if scheme == "https" else None,
            keepalive_expiry=KEEPALIVE_EXPIRY,
            network_backend=self._backend,
        )

    async def _give_back(self, origin: Origin, connection: httpcore.AsyncHTTPConnection) -> None:
        idle = self._idle.setdefault(origin, [])
        if connection.is_idle() and len(idle) < MAX_IDLE_PER_ORIGIN and self._idle_total < MAX_IDLE:
            idle.append(connection)
            self._idle_total += 1
        else:  # not reusable (the backend closes after each answer), or enough are kept
            await connection.aclose()
        if not idle:
            del self._idle[origin]  # the table holds only origins with idle connections

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                await connection.aclose()
        self._idle.clear()
        self._idle_total = 0
