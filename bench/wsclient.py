"""A WebSocket client in Python for the recovery scenario: raw asyncio protocols and a
hand-written frame parser. `RecoveryClient` parses every frame as JSON, because recovery checks
what each client got rather than how fast it arrives, and it opens few connections. The load
scenarios use the C client instead (bench/loadclient.py): at their rates a Python client is
the bottleneck.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from typing import Any, cast


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    header = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


CLOSE = 0x8  # the close frame's opcode


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete frames at the start of `buf` as (opcode, payload), and the incomplete
    rest."""
    payloads: list[tuple[int, bytes]] = []
    pos, n = 0, len(buf)
    while n - pos >= 2:
        length = buf[pos + 1] & 0x7F
        head = 2
        if length == 126:
            if n - pos < 4:
                break
            length = struct.unpack_from("!H", buf, pos + 2)[0]
            head = 4
        elif length == 127:
            if n - pos < 10:
                break
            length = struct.unpack_from("!Q", buf, pos + 2)[0]
            head = 10
        if n - pos < head + length:
            break
        payloads.append((buf[pos] & 0x0F, buf[pos + head : pos + head + length]))
        pos += head + length
    return payloads, buf[pos:]


class WsConnection(asyncio.Protocol):
    """The upgrade handshake and frame splitting; subclasses say what to do with messages."""

    def __init__(self, host: str, path: str, hello: list[bytes]) -> None:
        self.host, self.path, self.hello = host, path, hello
        self.buffer = b""
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport: TCP
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def send(self, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(_mask(payload))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if b" 101 " not in buf[:end]:
                self.buffer = b""
                self.refused(buf[:end].decode(errors="replace"))
                return
            self.open = True
            self.buffer = b""
            for message in self.hello:
                self.send(message)
            self.opened(buf[end + 4 :])
            return
        self.frames(buf)

    def frames(self, buf: bytes) -> None:
        frames, self.buffer = split_frames(buf)
        for opcode, payload in frames:
            if opcode == CLOSE:
                self.closed_by_server(payload)
                return
            self.message(payload)

    def opened(self, rest: bytes) -> None:
        """The upgrade succeeded and the hello is sent; `rest` is what followed the response."""
        self.frames(rest)

    def refused(self, response: str) -> None:
        """The server answered the upgrade with something other than 101."""

    def message(self, payload: bytes) -> None:
        """One complete (unfragmented) frame's payload."""

    def closed_by_server(self, payload: bytes) -> None:
        """A close frame: its payload is the code (2 bytes) and the reason."""
        self.close()


class RecoveryClient(WsConnection):
    """One Xshathra connection that parses every reply and publication on one channel.

    It keeps the stream position (epoch, last offset) for a later recovering subscribe, and
    resolves `done` once the subscribe reply says `recovered` and `expect` publications have
    arrived (those in the reply and those pushed after it), or fails it on an error reply."""

    def __init__(
        self,
        host: str,
        path: str,
        hello: list[bytes],
        channel: str,
        done: asyncio.Future[float],
        expect: int = 0,
        need_recovered: bool = False,
    ) -> None:
        super().__init__(host, path, hello)
        self.channel, self.done, self.expect = channel, done, expect
        self.need_recovered = need_recovered
        self.epoch = ""
        self.offset = 0
        self.offsets: list[int] = []  # of the publications received, in arrival order
        self.subscribed = False
        self.recovered = False

    def refused(self, response: str) -> None:
        self._fail(f"upgrade refused: {response.splitlines()[0] if response else ''}")

    def closed_by_server(self, payload: bytes) -> None:
        code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 0
        self._fail(f"closed by the server: {code} {payload[2:].decode(errors='replace')}")
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost ({exc or 'closed by server'})")

    def message(self, payload: bytes) -> None:
        if payload == b"{}":
            self.send(b"{}")  # the server's ping, alone in its frame
            return
        for line in payload.split(b"\n"):
            if line == b"{}":
                self.send(b"{}")  # a ping batched with other replies
            elif line:
                self._reply(json.loads(line))
        self._check_done()

    def _reply(self, reply: dict[str, Any]) -> None:
        if "error" in reply:
            # A failed connect is reported too: a client then subscribed without a session
            # would measure nothing meaningful.
            self._fail(f"command {reply.get('id')}: {reply['error']}")
        elif "subscribe" in reply:
            result: dict[str, Any] = reply["subscribe"]
            self.subscribed = True
            self.recovered = bool(result.get("recovered"))
            self.epoch = result.get("epoch", "")
            self.offset = result.get("offset", 0)
            for pub in result.get("publications", []):
                self._publication(pub)
        elif "push" in reply and reply["push"].get("channel") == self.channel:
            pub = reply["push"].get("pub")
            if pub is not None:
                self._publication(pub)

    @property
    def got(self) -> int:
        return len(self.offsets)

    def _publication(self, pub: dict[str, Any]) -> None:
        self.offsets.append(pub.get("offset", 0))
        self.offset = max(self.offset, self.offsets[-1])

    def _check_done(self) -> None:
        if self.done.done() or not self.subscribed or self.got < self.expect:
            return
        if self.need_recovered and not self.recovered:
            self._fail("subscribe reply says recovered=false")
        else:
            self.done.set_result(time.monotonic())

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(why))
