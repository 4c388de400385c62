"""A lean WebSocket load client: raw asyncio protocols and a hand-written frame parser. It must
never be the bottleneck, so it does the least work that still measures:

- sampled connections (one in fifty) parse every frame and decode each publication's send
  time for latency;
- the others only count publications, by counting the stack's publication marker in what
  arrives (`bytes.count`, in C: no Python work per message), carrying the marker's length
  minus one byte over to the next read so a marker split between reads counts once, and
  answer the stack's application-level ping frame when they see it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Stats:
    received: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    header = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


class WsClient(asyncio.Protocol):
    """One connection. `on_open` sends the stack's hello; `count` counts messages in a frame."""

    def __init__(
        self,
        host: str,
        path: str,
        stats: Stats,
        hello: list[bytes],
        count: Callable[[bytes], int],
        sample: bool,
        answer: Callable[[bytes], bytes | None],
        ready: asyncio.Future[None],
        marker: bytes = b"",
        ping: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.host, self.path, self.stats = host, path, stats
        self.hello, self.count, self.sample, self.answer = hello, count, sample, answer
        self.ready = ready
        # Counting mode: no frame parsing, see the module's docstring.
        self.marker = marker if not sample else b""
        self.ping = ping
        self.carry = b""
        self.buffer = b""
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def send(self, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(_mask(payload))

    def data_received(self, data: bytes) -> None:
        if self.open and self.marker:
            chunk = self.carry + data
            self.stats.received += chunk.count(self.marker)
            self.carry = chunk[-(len(self.marker) - 1) :]
            if self.ping is not None and self.ping[0] in chunk:
                self.send(self.ping[1])
            return
        buf = self.buffer + data if self.buffer else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if b" 101 " not in buf[:end]:
                self.stats.errors += 1
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(buf[:end].decode(errors="replace")))
                return
            self.open = True
            buf = buf[end + 4 :]
            for message in self.hello:
                self.send(message)
            if not self.ready.done():
                self.ready.set_result(None)
            if self.marker:
                self.data_received(buf)
                return
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
            payload = buf[pos + head : pos + head + length]
            pos += head + length
            got = self.count(payload)
            if got:
                self.stats.received += got
                if self.sample:
                    self._latency(payload)
            else:
                reply = self.answer(payload)
                if reply is not None:
                    self.send(reply)
        self.buffer = buf[pos:]

    def _latency(self, payload: bytes) -> None:
        now = time.time_ns()
        start = 0
        while (i := payload.find(b'"t":', start)) >= 0:
            j = i + 4
            k = j
            while k < len(payload) and 48 <= payload[k] <= 57:
                k += 1
            if k > j:
                self.stats.latencies_ns.append(now - int(payload[j:k]))
            start = k
