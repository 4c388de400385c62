"""Issue 11 M1: request heads are bounded in size and in time, on HTTP and on the WebSocket
upgrade (uvicorn parses both with httptools before anything else sees them), against a real
node with raw sockets.

Before, httptools buffered a header of any size (two connections held ~293 MB) and a
connection that never completed its request head, or never sent one, stayed open for ever
(3,000 stalled sockets stayed open). Now a head over XSHATHRA_MAX_HEADER_BYTES is answered 431
and the connection closed; a head not complete within XSHATHRA_HEADER_TIMEOUT is answered 408
(or, if nothing at all was sent, the connection is just closed).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rawws import close_code_or_end, open_raw
from tests.support.server import ServerProcess, peak_rss, running_server

LIMIT = 16 * 1024
TIMEOUT = 1.0
MIB = 1024 * 1024
HUGE = 8 * MIB  # one header this long, sent in pieces


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"XSHATHRA_MAX_HEADER_BYTES": str(LIMIT), "XSHATHRA_HEADER_TIMEOUT": str(TIMEOUT)}
    with running_server(tmp_path_factory.mktemp("heads"), env=env) as proc:
        yield proc


def answer(sock: socket.socket, deadline: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (fails past `deadline`)."""
    sock.settimeout(deadline)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def send_huge_head(server: ServerProcess, first_lines: bytes) -> bytes:
    """A request head with one enormous header, sent until the server stops taking it; then
    what the server answered."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with sock:
        sock.sendall(first_lines + b"X-Big: ")
        piece = b"a" * 65536
        try:
            for _ in range(HUGE // len(piece)):
                sock.sendall(piece)
        except OSError:  # the server answered and closed while we were still sending
            pass
        return answer(sock)


@pytest.mark.parametrize(
    "first_lines",
    [
        b"GET /realtime/health HTTP/1.1\r\nHost: x\r\n",
        b"GET /realtime/connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ],
    ids=["http", "websocket-upgrade"],
)
async def test_an_oversized_head_is_answered_431_and_not_buffered(
    guarded: ServerProcess, first_lines: bytes
) -> None:
    before = peak_rss(guarded)
    replies = await asyncio.gather(
        *(asyncio.to_thread(send_huge_head, guarded, first_lines) for _ in range(2))
    )
    for reply in replies:
        assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
        assert b'{"error":' in reply
    grown = peak_rss(guarded) - before
    assert grown < 8 * MIB, f"server peak RSS grew {grown / MIB:.1f} MiB"


async def test_a_head_just_under_the_limit_is_served(guarded: ServerProcess) -> None:
    def request() -> bytes:
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as sock:
            filler = b"a" * (LIMIT - 200)
            sock.sendall(
                b"GET /realtime/health HTTP/1.1\r\nHost: x\r\nX-Fill: "
                + filler
                + b"\r\nConnection: close\r\n\r\n"
            )
            return answer(sock)

    assert (await asyncio.to_thread(request)).startswith(b"HTTP/1.1 200 ")


def trickle(server: ServerProcess, prelude: bytes) -> tuple[bytes, float]:
    """After `prelude`, send one more header byte every 0.2 s, never finishing the head:
    what the server answered, and when it closed the connection (s after the prelude)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(prelude + b"GET /realtime/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        sock.settimeout(0.2)
        data = b""
        while time.monotonic() - started < 5:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.send(b"a")
                except OSError:
                    break
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data, time.monotonic() - started


async def test_a_slow_head_is_cut_off_after_the_header_timeout(guarded: ServerProcess) -> None:
    data, closed_after = await asyncio.to_thread(trickle, guarded, b"")
    assert closed_after < TIMEOUT + 1.0, f"still open after {closed_after:.1f} s"
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]


async def test_a_slow_head_after_a_keep_alive_request_is_cut_off(guarded: ServerProcess) -> None:
    """The second request on a kept-alive connection gets the same deadline for its head."""
    first = b"GET /realtime/health HTTP/1.1\r\nHost: x\r\n\r\n"
    data, closed_after = await asyncio.to_thread(trickle, guarded, first)
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert closed_after < TIMEOUT + 1.0, f"still open after {closed_after:.1f} s"
    assert b"HTTP/1.1 408 " in data


async def test_a_connection_that_never_sends_a_request_is_closed(guarded: ServerProcess) -> None:
    def idle() -> tuple[bytes, float]:
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as sock:
            started = time.monotonic()
            return answer(sock), time.monotonic() - started

    data, closed_after = await asyncio.to_thread(idle)
    assert data == b""
    assert closed_after < TIMEOUT + 1.0


async def test_a_slow_handler_is_not_cut_by_the_header_timeout(tmp_path: Path) -> None:
    """The deadline is for the request head only: a websocket upgraded in time stays open
    (and is then governed by the connect deadline, not this one)."""
    env = {"XSHATHRA_HEADER_TIMEOUT": "0.5", "XSHATHRA_CONNECT_TIMEOUT": "3"}
    with running_server(tmp_path, env=env) as server:
        sock = await asyncio.to_thread(open_raw, server)
        with sock:
            started = time.monotonic()
            assert await asyncio.to_thread(close_code_or_end, sock, 6.0) == 3502
            assert time.monotonic() - started > 2.0
