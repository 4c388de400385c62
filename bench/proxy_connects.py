"""Connects per second through a connect proxy against token connects, in one run (issue 15).

One Xshathra server pinned to the server core (`stacks.serving`), one app. The benchmark's
process (pinned to the client core) runs both the WebSocket clients and the app's backend: a
minimal asyncio HTTP responder answering every connect proxy request with a fixed Centrifugo
reply, over keep-alive loopback connections. Each mode opens `--n` connections, `--concurrency`
at a time, each one: upgrade, `connect` (a token signed with the app secret, or no token and
`?key=`), await the reply, close. Reported: connects per second per mode, p50/p99 of one
connect, and the ratio.

    python -m bench.proxy_connects --n 2000 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import httpx
import websockets

from bench.stacks import CLIENT_CORE, STACKS, XS_PATH, cpu_seconds, serving, xs_token

REPLY = json.dumps({"result": {"user": "bench", "expire_at": 0}}).encode()


async def _backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 keep-alive: read a request head and its body, answer the fixed reply."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(REPLY)).encode()
                + b"\r\n\r\n"
                + REPLY
            )
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        writer.close()  # the server closed the pooled connection, or the run is over


async def _connect_once(url: str, frame: str) -> float:
    started = time.perf_counter()
    async with websockets.connect(url, compression=None) as ws:
        await ws.send(frame)
        reply = await ws.recv()
        if b'"connect"' not in (reply.encode() if isinstance(reply, str) else reply):
            raise RuntimeError(f"connect refused: {reply!r}")
    return time.perf_counter() - started


async def _run_mode(url: str, frames: list[str], concurrency: int, pid: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    cpu = cpu_seconds(pid)

    async def one(frame: str) -> float:
        async with gate:
            return await _connect_once(url, frame)

    started = time.perf_counter()
    latencies = sorted(await asyncio.gather(*(one(f) for f in frames)))
    wall = time.perf_counter() - started
    server_cpu = cpu_seconds(pid) - cpu
    return {
        "connects_per_s": round(len(frames) / wall, 1),
        # Server CPU per connect: whether the server or the client core was the limit.
        "server_cpu_ms_per_connect": round(server_cpu / len(frames) * 1000, 2),
        "server_cpu_share": round(server_cpu / wall, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


async def main(n: int, concurrency: int) -> dict[str, Any]:
    server = await asyncio.start_server(_backend, "127.0.0.1", 0)
    backend_port = server.sockets[0].getsockname()[1]
    stack = STACKS["xshathra"]
    async with serving(stack, {"XSHATHRA_PROXY_ALLOW_PRIVATE": "1"}) as (port, proc, app):
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            body = {
                "proxies": {
                    "client": {
                        "proxy": {
                            "connect": {
                                "enabled": True,
                                "endpoint": f"http://127.0.0.1:{backend_port}/connect",
                                "timeout": "5s",  # a loaded machine: measure, do not refuse
                            }
                        }
                    }
                }
            }
            r = await http.put(
                f"{base}/api/applications/{app['app_id']}",
                json=body,
                headers={"X-API-Key": str(app["api_key"])},
            )
            r.raise_for_status()
        ws = f"ws://127.0.0.1:{port}{XS_PATH}"
        token_frames = [
            json.dumps({"id": 1, "connect": {"token": xs_token(app)}}) for _ in range(n)
        ]
        proxy_frames = [json.dumps({"id": 1, "connect": {}})] * n
        pid = proc.pid
        await _run_mode(ws, token_frames[: min(n, 200)], concurrency, pid)  # warm-up
        token = await _run_mode(ws, token_frames, concurrency, pid)
        proxied = f"{ws}?key={app['client_api_key']}"
        proxy = await _run_mode(proxied, proxy_frames, concurrency, pid)
    server.close()
    return {
        "n": n,
        "concurrency": concurrency,
        "token": token,
        "proxy": proxy,
        "proxy_vs_token": round(proxy["connects_per_s"] / token["connects_per_s"], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    print(json.dumps(asyncio.run(main(args.n, args.concurrency)), indent=2))
