"""The proxy caller's keep-alive pool against a real local HTTP server: connections are
reused, a backend that closes after each answer is not, and a reply past the limit is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from xshathra.outbound.netguard import GuardedNetworkBackend
from xshathra.proxies.pool import ProxyPool, ReplyTooLarge


@asynccontextmanager
async def http_server(body: bytes, close: bool = False) -> AsyncIterator[tuple[str, list[int]]]:
    """Answers every request with `body`; counts connections accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                extra = b"Connection: close\r\n" if close else b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\n"
                    + extra
                    + b"Content-Length: %d\r\n\r\n" % len(body)
                    + body
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/p", accepted
    finally:
        server.close()


def pool() -> ProxyPool:
    return ProxyPool(GuardedNetworkBackend(allow_private=True))


async def test_connections_are_kept_alive_and_reused() -> None:
    async with http_server(b'{"result":{}}') as (url, accepted):
        p = pool()
        for _ in range(5):
            assert await p.post(url, [], b"{}", 5.0, 1000) == (200, b'{"result":{}}')
        assert len(accepted) == 1
        await p.close()


async def test_a_backend_closing_each_connection_is_not_reused() -> None:
    async with http_server(b"{}", close=True) as (url, accepted):
        p = pool()
        for _ in range(3):
            assert (await p.post(url, [], b"{}", 5.0, 1000))[0] == 200
        assert len(accepted) == 3
        await p.close()


async def test_a_reply_past_the_limit_is_refused() -> None:
    async with http_server(b"x" * 5000) as (url, _):
        p = pool()
        with pytest.raises(ReplyTooLarge):
            await p.post(url, [], b"{}", 5.0, 1000)
        await p.close()
