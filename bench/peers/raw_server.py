"""The practical Python bound: a raw uvloop server that accepts WebSocket upgrades and, on
`POST /publish`, frames the body once and writes the same bytes to every socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import sys

import uvloop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
clients: set[asyncio.Transport] = set()


def frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.ws = False
        self.t: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.t is not None:
            clients.discard(self.t)

    def data_received(self, data: bytes) -> None:
        if self.ws:
            return  # ignore client frames
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = self.buf[:end].decode("latin-1"), self.buf[end + 4 :]
            headers = {
                k.lower(): v.strip()
                for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:])
            }
            if "sec-websocket-key" in headers:
                accept = base64.b64encode(
                    hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest()
                ).decode()
                assert self.t is not None
                self.t.write(
                    (
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    ).encode()
                )
                self.ws = True
                clients.add(self.t)
                return
            length = int(headers.get("content-length", "0"))
            if len(rest) < length:
                return
            body, self.buf = rest[:length], rest[length:]
            wire = frame(body)
            for t in clients:
                t.write(wire)
            assert self.t is not None
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
