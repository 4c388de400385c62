"""A subscriber that stops reading, against a real node: once the server holds more than
`XSHATHRA_CLIENT_QUEUE_MAX_BYTES` unsent for it, it is disconnected as slow (3008) instead of
growing the server's memory, and every other subscriber of the channel goes on receiving every
publication, in order. The slow one is a raw socket with a tiny receive buffer that reads
nothing until the publishing is over; then it reads what it was sent, ending in a Close frame."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.support.clients import realtime_token
from tests.support.rawws import client_frame, read_frame, upgrade
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
    upgrade(sock)
    commands = [
        {"id": 1, "connect": {"token": token}},
        {"id": 2, "subscribe": {"channel": CHANNEL}},
    ]
    sock.sendall(client_frame(b"\n".join(json.dumps(c).encode() for c in commands)))
    seen: list[Json] = []
    while not any(r.get("id") == 2 for r in seen):
        opcode, payload = read_frame(sock)
        assert opcode == 0x1, (opcode, payload)
        seen += [json.loads(line) for line in payload.split(b"\n") if line]
    assert "subscribe" in next(r for r in seen if r.get("id") == 2), seen
    return sock


def _drain(sock: socket.socket) -> tuple[int, list[int]]:
    """Read to the Close frame: its code, and the offsets of the publications before it."""
    offsets: list[int] = []
    while True:
        opcode, payload = read_frame(sock)
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
