"""A subscriber that stops reading, against a real node: once the server holds more than
`XSHATHRA_CLIENT_QUEUE_MAX_BYTES` unsent for it, it is disconnected as slow (3008) instead of
growing the server's memory, and every other subscriber of the channel goes on receiving every
publication, in order. The slow one is a raw socket with a tiny receive buffer that reads
nothing until the publishing is over; then it reads what it was sent, ending in a Close frame."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import struct
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.integration.test_engine_bad_input import _client_frame, _recv_exactly
from tests.support.clients import realtime_token
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]
LIMIT = 256 * 1024
DATA = "x" * 60_000  # under the default 64 KiB message limit
# ~9 MB in all: past the server's kernel send buffer for the socket (tcp_wmem autotunes up to
# 4 MiB) and the slow client's receive buffer, then past LIMIT in the server's own buffer.
COUNT = 150
CHANNEL = "public:firehose"


def _open_and_subscribe(server: ServerProcess, token: str) -> socket.socket:
    """A blocking socket with a receive buffer of a few KiB, connected and subscribed."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: window size
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall(
        (
            "GET /realtime/connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += _recv_exactly(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    commands = [
        {"id": 1, "connect": {"token": token}},
        {"id": 2, "subscribe": {"channel": CHANNEL}},
    ]
    sock.sendall(_client_frame(b"\n".join(json.dumps(c).encode() for c in commands)))
    seen: list[Json] = []
    while not any(r.get("id") == 2 for r in seen):
        opcode, payload = _read_frame(sock)
        assert opcode == 0x1, (opcode, payload)
        seen += [json.loads(line) for line in payload.split(b"\n") if line]
    assert "subscribe" in next(r for r in seen if r.get("id") == 2), seen
    return sock


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    first, second = _recv_exactly(sock, 2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", _recv_exactly(sock, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", _recv_exactly(sock, 8))[0]
    return first & 0x0F, _recv_exactly(sock, size)


def _drain(sock: socket.socket) -> tuple[int, list[int]]:
    """Read to the Close frame: its code, and the offsets of the publications before it."""
    offsets: list[int] = []
    while True:
        opcode, payload = _read_frame(sock)
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0], offsets
        for line in payload.split(b"\n"):
            message = json.loads(line) if line else {}
            if "pub" in message.get("push", {}):
                offsets.append(message["push"]["pub"].get("offset", 0))


async def test_a_subscriber_that_stops_reading_is_cut_off_and_nobody_else_is(
    tmp_path: Path,
) -> None:
    env = {"XSHATHRA_CLIENT_QUEUE_MAX_BYTES": str(LIMIT)}
    with running_server(tmp_path, env=env) as server:
        app = server.create_app(name="slow")
        slow = await asyncio.to_thread(
            _open_and_subscribe, server, realtime_token(server, app, "slow")
        )
        with slow:
            async with websockets.connect(server.ws_url, max_size=None) as fast:
                token = realtime_token(server, app, "fast")
                await fast.send(json.dumps({"id": 1, "connect": {"token": token}}))
                await fast.send(json.dumps({"id": 2, "subscribe": {"channel": CHANNEL}}))
                received: list[Json] = []
                subscribed, all_in = asyncio.Event(), asyncio.Event()

                async def read_fast() -> None:
                    async for frame in fast:
                        for line in str(frame).split("\n"):
                            message = json.loads(line) if line else {}
                            if message.get("id") == 2:
                                subscribed.set()
                            if "pub" in message.get("push", {}):
                                received.append(message["push"]["pub"])
                                if len(received) == COUNT:
                                    all_in.set()

                reader = asyncio.create_task(read_fast())
                await asyncio.wait_for(subscribed.wait(), 10)
                async with httpx.AsyncClient(
                    base_url=server.base_url, headers={"X-API-Key": str(app["api_key"])}
                ) as http:
                    for _ in range(COUNT):
                        r = await http.post(
                            "/realtime/api/publish", json={"channel": CHANNEL, "data": DATA}
                        )
                        assert "result" in r.json(), r.text
                    await asyncio.wait_for(all_in.wait(), 20)
                    reader.cancel()
                    assert [p["offset"] for p in received] == list(range(1, COUNT + 1))
                    assert all(p["data"] == DATA for p in received)

                    code, offsets = await asyncio.to_thread(_drain, slow)
                    assert code == 3008
                    # What it did get came in order, and it never got everything.
                    assert offsets == list(range(1, len(offsets) + 1))
                    assert len(offsets) < COUNT
                    health = await http.get("/realtime/health")
                    assert health.status_code == 200
                    channels = await http.post("/realtime/api/channels", json={})
                    assert channels.json()["result"]["channels"][CHANNEL]["num_clients"] == 1
