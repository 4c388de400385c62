"""Issue 11 H3: WebSocket control-frame floods against a real node, with raw sockets.

A client that sends pings and never reads made the server buffer every pong: three sockets took
it from 124 to 1,541 MiB in 11 s and delayed everyone else by seconds. Now every write to a
connection is bounded: reading stops while a connection's unsent output is above a high-water
mark, so a client that sends faster than it reads is slowed down to its own reading speed; a
connection that has not sent `connect` yet gets a small budget of bytes (in and out) and a
deadline. The server's memory is read from /proc (VmHWM, the peak resident size), and an
innocent client's publish-to-receive latency is measured while the flood runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.support.clients import realtime_token
from tests.support.rawws import client_frame, close_code_or_end, open_raw
from tests.support.server import ServerProcess, peak_rss, running_server

Json = dict[str, Any]
MIB = 1024 * 1024
FLOOD_BYTES = 48 * MIB  # per socket: unbounded pongs would keep about as much in the server
PING = client_frame(b"p" * 125, opcode=0x9)  # the largest ping: 131 bytes in, 127 out
CHUNK = PING * 8000  # about 1 MiB per send
NO_RATE_LIMIT = {
    "XSHATHRA_CLIENT_COMMAND_RATE": "1e9",
    "XSHATHRA_CLIENT_COMMAND_BURST": "1000000000",
}


def flood(sock: socket.socket, total: int, stall: float) -> tuple[int, str]:
    """Send pings and read nothing: until `total` bytes went out, the server stopped taking
    them for `stall` seconds (it stopped reading), or the connection ended. Returns the bytes
    sent and why it stopped."""
    sock.settimeout(stall)
    sent = 0
    try:
        while sent < total:
            sent += sock.send(CHUNK)
    except TimeoutError:
        return sent, "stalled"
    except OSError:
        return sent, "ended"
    return sent, "done"


class Bystander:
    """An innocent client of another app: connected, subscribed, timing each publication."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.app = server.create_app(name="bystander")
        self.latencies: list[float] = []

    async def run(self, stop: threading.Event) -> None:
        token = realtime_token(self.server, self.app, "innocent")
        async with (
            websockets.connect(self.server.ws_url) as ws,
            httpx.AsyncClient(
                base_url=self.server.base_url, headers={"X-API-Key": str(self.app["api_key"])}
            ) as http,
        ):
            await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:b"}}))
            seen = 0
            while seen < 2:
                seen += len(str(await asyncio.wait_for(ws.recv(), 5)).split("\n"))
            n = 0
            while not stop.is_set() or n < 5:
                n += 1
                start = time.monotonic()
                body = {"channel": "public:b", "data": n}
                r = await http.post("/realtime/api/publish", json=body)
                assert "result" in r.json(), r.text
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if message.get("push", {}).get("pub", {}).get("data") == n:
                        break
                self.latencies.append(time.monotonic() - start)
                await asyncio.sleep(0.05)  # a steady trickle, not a flood of our own


async def run_floods(
    server: ServerProcess, socks: list[socket.socket], stall: float
) -> tuple[list[tuple[int, str]], list[float]]:
    bystander = Bystander(server)
    stop = threading.Event()
    timing = asyncio.create_task(bystander.run(stop))
    try:
        results = await asyncio.gather(
            *(asyncio.to_thread(flood, sock, FLOOD_BYTES, stall) for sock in socks)
        )
    finally:
        stop.set()
    await asyncio.wait_for(timing, 30)
    return list(results), bystander.latencies


async def test_ping_flood_before_connect_is_cut_off_and_hurts_nobody(tmp_path: Path) -> None:
    """Three sockets that never send `connect` flood pings without reading: each is closed once
    it used its pre-connect budget, the server's peak memory barely moves, and another
    tenant's client keeps getting its publications within a fraction of a second. (The
    command rate limit, which pings also draw on, is lifted: the budget is what is tested.)"""
    with running_server(tmp_path, env=NO_RATE_LIMIT) as server:
        before = peak_rss(server)
        socks = [open_raw(server) for _ in range(3)]
        try:
            results, latencies = await run_floods(server, socks, stall=3.0)
            grown = peak_rss(server) - before
            assert grown < 24 * MIB, f"server peak RSS grew {grown / MIB:.0f} MiB ({results})"
            assert max(latencies) < 0.5, f"bystander latencies up to {max(latencies):.2f} s"
            assert all(sent < FLOOD_BYTES for sent, _ in results), results
            for sock in socks:  # each connection is over, at most after the close grace
                assert await asyncio.to_thread(close_code_or_end, sock, 8.0) in (None, 3501)
        finally:
            for sock in socks:
                sock.close()


async def test_connected_ping_flood_is_slowed_to_the_readers_pace(tmp_path: Path) -> None:
    """With the command rate limit out of the way, a connected client that floods pings and
    reads nothing is simply no longer read from once its unsent pongs pass the high-water
    mark: its sends stall, the server's memory stays put, and others are not delayed."""
    with running_server(tmp_path, env=NO_RATE_LIMIT) as server:
        app = server.create_app(name="flooder")
        socks = [open_raw(server, realtime_token(server, app, f"f{i}")) for i in range(3)]
        before = peak_rss(server)
        try:
            results, latencies = await run_floods(server, socks, stall=2.0)
            grown = peak_rss(server) - before
            assert grown < 24 * MIB, f"server peak RSS grew {grown / MIB:.0f} MiB ({results})"
            assert max(latencies) < 0.5, f"bystander latencies up to {max(latencies):.2f} s"
            assert [why for _, why in results] == ["stalled"] * 3, results
        finally:
            for sock in socks:
                sock.close()


async def test_connected_ping_flood_counts_against_the_command_rate(
    server: ServerProcess,
) -> None:
    """A client that reads its pongs but pings far beyond the command rate is disconnected
    with 3013 (too many requests), as a command flood is: pings are not free work."""
    app = server.create_app(name="pinger")
    sock = await asyncio.to_thread(open_raw, server, realtime_token(server, app, "pinger"))
    with sock:

        def ping_and_read() -> int | None:
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                sock.sendall(PING * 2000)
            return close_code_or_end(sock, 5.0)

        assert await asyncio.to_thread(ping_and_read) == 3013


async def test_a_socket_that_never_sends_connect_is_closed_after_the_deadline(
    tmp_path: Path,
) -> None:
    """XSHATHRA_CONNECT_TIMEOUT: no `connect` within it, and the server closes with 3502
    (stale), as Centrifugo does."""
    with running_server(tmp_path, env={"XSHATHRA_CONNECT_TIMEOUT": "1"}) as server:
        sock = await asyncio.to_thread(open_raw, server)
        with sock:
            started = time.monotonic()
            assert await asyncio.to_thread(close_code_or_end, sock, 5.0) == 3502
            assert 0.8 < time.monotonic() - started < 3.0
