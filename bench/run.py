"""Fan-out benchmark: Xshathra and its peers under the same load, server pinned to core 0,
load client pinned to core 1. `python -m bench.run --quick` runs N=1,000 only and prints, as
its last line, one JSON object with each stack's figures and the ratios.

Method: N WebSocket clients on one channel; ~100-byte JSON publications sent over HTTP at a
rising rate until deliveries per second (counted at the clients) stop rising. The report gives
the maximum, p50/p99 publish-to-receive latency at 70% of it, and the CPU of the server and of
the client (a client near 100% would mean the client, not the server, was the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from bench.wsclient import Stats, WsClient

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PY = sys.executable
SERVER_CORE, CLIENT_CORE = "0", "1"
STEP_SECONDS = 2.0
# A namespace as a Centrifugo user would configure broadcast fan-out: history for recovery,
# no presence or join/leave (N joins to N subscribers would be N² messages at setup).
NAMESPACE = {"history_size": 100, "history_ttl": 600, "allow_subscribe_for_client": True}
CHANNEL = "bench:fanout"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu(pid: int) -> float:
    """CPU of a process and its children (node, uvicorn workers)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        total += sum(children_cpu(int(c)) for c in children)
    return total


@dataclass
class Stack:
    name: str
    command: Callable[[int, Path], list[str]]
    path: str
    hello: Callable[[dict[str, Any]], list[bytes]]
    count: Callable[[bytes], int]
    answer: Callable[[bytes], bytes | None]
    publish_path: str
    publish_body: Callable[[bytes, dict[str, Any]], bytes]
    headers: Callable[[dict[str, Any]], dict[str, str]] = lambda ctx: {}
    env: dict[str, str] = field(default_factory=dict)
    marker: bytes = b'"t":'  # occurs once per publication as the client receives it
    ping: tuple[bytes, bytes] | None = None  # (server's ping frame, the client's answer)


def _xs_hello(ctx: dict[str, Any]) -> list[bytes]:
    token = jwt.encode(
        {
            "sub": f"u{secrets.token_hex(3)}",
            "app_id": ctx["app_id"],
            "exp": int(time.time()) + 3600,
        },
        ctx["app_secret"],
        algorithm="HS256",
    )
    return [
        json.dumps({"id": 1, "connect": {"token": token}}).encode()
        + b"\n"
        + json.dumps({"id": 2, "subscribe": {"channel": CHANNEL}}).encode()
    ]


STACKS: dict[str, Stack] = {
    "xshathra": Stack(
        "xshathra",
        lambda port, tmp: [PY, "-m", "xshathra", "serve", "--port", str(port)],
        "/realtime/connection/websocket",
        _xs_hello,
        lambda p: p.count(b'"pub"'),
        lambda p: b"{}" if p == b"{}" else None,
        "/realtime/api/publish",
        lambda data, ctx: b'{"channel":"' + CHANNEL.encode() + b'","data":' + data + b"}",
        lambda ctx: {"X-API-Key": ctx["api_key"]},
        {"XSHATHRA_LOG_LEVEL": "warning", "XSHATHRA_CLIENT_COMMAND_BURST": "1000"},
        marker=b'"pub"',
        # `{}` is a ping alone or as one line of a batched frame; publications never hold it.
        ping=(b"{}", b"{}"),
    ),
    "raw": Stack(
        "raw",
        lambda port, tmp: [PY, str(BENCH / "peers" / "raw_server.py"), str(port)],
        "/",
        lambda ctx: [],
        lambda p: 1,
        lambda p: None,
        "/publish",
        lambda d, c: d,
    ),
    "node_ws": Stack(
        "node_ws",
        lambda port, tmp: ["node", str(BENCH / "peers" / "node_ws.mjs"), str(port)],
        "/",
        lambda ctx: [],
        lambda p: 1,
        lambda p: None,
        "/publish",
        lambda d, c: d,
    ),
    "python_socketio": Stack(
        "python_socketio",
        lambda port, tmp: [PY, str(BENCH / "peers" / "py_socketio.py"), str(port)],
        "/socket.io/?EIO=4&transport=websocket",
        lambda ctx: [b"40"],
        lambda p: 1 if p.startswith(b"42") else 0,
        lambda p: b"3" if p == b"2" else None,
        "/publish",
        lambda d, c: d,
        marker=b'42["msg"',
        ping=(b"\x81\x012", b"3"),
    ),
}


def client_for(
    stack: Stack, stats: Stats, ctx: dict[str, Any], sample: bool, ready: asyncio.Future[None]
) -> WsClient:
    """One load-client connection speaking `stack`'s protocol; `sample` ones time latency."""
    return WsClient(
        "127.0.0.1",
        stack.path,
        stats,
        stack.hello(ctx),
        stack.count,
        sample,
        stack.answer,
        ready,
        stack.marker,
        stack.ping,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


class Publisher:
    """Keep-alive HTTP connections sending publications at a set rate."""

    def __init__(
        self,
        port: int,
        path: str,
        headers: dict[str, str],
        body: Callable[[bytes], bytes],
        connections: int = 8,
    ) -> None:
        self.port, self.path, self.headers, self.body = port, path, headers, body
        self.queue: asyncio.Queue[None] = asyncio.Queue(maxsize=10_000)
        self.sent = 0
        self.workers = [asyncio.create_task(self._worker()) for _ in range(connections)]

    async def _worker(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        while True:
            await self.queue.get()
            payload = b'{"t":%d,"p":"%s"}' % (time.time_ns(), b"x" * 60)
            body = self.body(payload)
            writer.write(
                f"POST {self.path} HTTP/1.1\r\nHost: bench\r\n{extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            self.sent += 1

    async def run(self, rate: float, seconds: float) -> None:
        start = time.monotonic()
        due = 0.0
        while (elapsed := time.monotonic() - start) < seconds:
            target = int(rate * elapsed)
            while due < target:
                self.queue.put_nowait(None)
                due += 1
            await asyncio.sleep(0.005)

    def close(self) -> None:
        for worker in self.workers:
            worker.cancel()


@contextlib.asynccontextmanager
async def serving(
    stack: Stack, extra_env: dict[str, str] | None = None
) -> AsyncIterator[tuple[int, subprocess.Popen[bytes], dict[str, Any]]]:
    """Run one stack's server pinned to the server core; yields (port, process, app context)."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{stack.name}-"))
    admin = "adm_" + secrets.token_hex(8)
    env = {
        **os.environ,
        "XSHATHRA_ADMIN_API_KEY": admin,
        "XSHATHRA_DATABASE_URL": f"sqlite:///{tmp / 'b.db'}",
        **stack.env,
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *stack.command(port, tmp)],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_port(port)
        yield port, proc, await _setup(stack, port, admin)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


async def measure(stack: Stack, n: int, rates: list[float]) -> dict[str, Any]:
    async with serving(stack) as (port, proc, ctx):
        stats = Stats()
        loop = asyncio.get_running_loop()
        waits = []
        for i in range(n):
            ready: asyncio.Future[None] = loop.create_future()
            await loop.create_connection(
                lambda ready=ready, i=i: client_for(stack, stats, ctx, i % 50 == 0, ready),
                "127.0.0.1",
                port,
            )
            waits.append(ready)
        await asyncio.gather(*waits)
        await asyncio.sleep(1.0)  # let subscriptions settle before measuring
        publisher = Publisher(
            port, stack.publish_path, stack.headers(ctx), lambda d: stack.publish_body(d, ctx)
        )
        steps = []
        best = 0.0
        for rate in rates:
            stats.latencies_ns.clear()
            received0, cpu_s0, cpu_c0, t0 = (
                stats.received,
                children_cpu(proc.pid),
                cpu_seconds(os.getpid()),
                time.monotonic(),
            )
            await publisher.run(rate, STEP_SECONDS)
            dt = time.monotonic() - t0
            deliveries = (stats.received - received0) / dt
            steps.append(
                {
                    "rate": rate,
                    "deliveries_per_s": round(deliveries),
                    "server_cpu": round((children_cpu(proc.pid) - cpu_s0) / dt, 2),
                    "client_cpu": round((cpu_seconds(os.getpid()) - cpu_c0) / dt, 2),
                    "p50_ms": _pct(stats.latencies_ns, 50),
                    "p99_ms": _pct(stats.latencies_ns, 99),
                }
            )
            if deliveries < best * 1.05:
                break
            best = max(best, deliveries)
        publisher.close()
        peak = max(steps, key=lambda s: s["deliveries_per_s"])
        return {
            "stack": stack.name,
            "n": n,
            "max_deliveries_per_s": peak["deliveries_per_s"],
            "server_cpu_at_max": peak["server_cpu"],
            "client_cpu_at_max": peak["client_cpu"],
            "steps": steps,
        }


def _table(results: dict[str, dict[int, Any]]) -> str:
    lines = [
        "| stack | N | max deliveries/s | server CPU | client CPU | p50 ms @70% | p99 ms @70% |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, by_n in results.items():
        for n, r in sorted(by_n.items()):
            lines.append(
                f"| {name} | {n:,} | {r['max_deliveries_per_s']:,} | "
                f"{r['server_cpu_at_max']} | {r['client_cpu_at_max']} | "
                f"{r['at_70pct']['p50_ms']} | {r['at_70pct']['p99_ms']} |"
            )
    return "\n".join(lines) + "\n"


def _pct(values: list[int], pct: int) -> float | None:
    if len(values) < 10:
        return None
    return round(statistics.quantiles(values, n=100)[pct - 1] / 1e6, 2)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def idle_memory(stack: Stack, n: int) -> dict[str, Any]:
    """Server memory per idle connection: RSS with n clients connected (and, for Xshathra,
    subscribed) minus RSS before, over n."""
    async with serving(stack, {"XSHATHRA_MAX_CONNECTIONS_PER_APP": str(n * 2)}) as (
        port,
        proc,
        ctx,
    ):
        await asyncio.sleep(1.0)
        before = rss_bytes(proc.pid)
        stats = Stats()
        loop = asyncio.get_running_loop()
        transports = []
        for start in range(0, n, 500):
            waits = []
            for _ in range(start, min(n, start + 500)):
                ready: asyncio.Future[None] = loop.create_future()
                transport, _ = await loop.create_connection(
                    lambda ready=ready: client_for(stack, stats, ctx, False, ready),
                    "127.0.0.1",
                    port,
                )
                transports.append(transport)
                waits.append(ready)
            await asyncio.gather(*waits)
        await asyncio.sleep(2.0)  # subscribe replies processed, allocator settled
        after = rss_bytes(proc.pid)
        for transport in transports:
            transport.close()
        return {
            "stack": stack.name,
            "n": n,
            "rss_before": before,
            "rss_after": after,
            "bytes_per_connection": round((after - before) / n),
        }


async def _setup(stack: Stack, port: int, admin: str) -> dict[str, Any]:
    if stack.name != "xshathra":
        return {}
    import httpx

    async with httpx.AsyncClient() as http:
        for _ in range(100):
            if (await http.get(f"http://127.0.0.1:{port}/realtime/health")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        r = await http.post(
            f"http://127.0.0.1:{port}/api/applications",
            headers={"X-ADMIN-API-KEY": admin},
            json={"name": "bench", "rate_limit": 1_000_000},
        )
        app: dict[str, Any] = r.json()["application"]
        r = await http.put(
            f"http://127.0.0.1:{port}/api/applications/{app['app_id']}",
            headers={"X-ADMIN-API-KEY": admin},
            json={"namespaces": {"bench": NAMESPACE}},
        )
        r.raise_for_status()
        return app


async def latency_at(stack: Stack, n: int, rate: float) -> dict[str, Any]:
    result = await measure(stack, n, [rate])
    return result["steps"][0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fanout at N=1,000 only")
    parser.add_argument("--stacks", default="xshathra,raw,node_ws,python_socketio")
    parser.add_argument(
        "--idle",
        type=int,
        default=0,
        help="also measure memory per idle connection with this many clients",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    sizes = [1000] if args.quick else [100, 1000, 5000]
    rates = [25.0 * 2**i for i in range(12)]
    results: dict[str, dict[int, Any]] = {}
    for name in args.stacks.split(","):
        stack = STACKS[name]
        if stack.command(0, Path("."))[0] == "node" and not shutil.which("node"):
            continue
        for n in sizes:
            found = await measure(stack, n, rates)
            best_rate = max(found["steps"], key=lambda s: s["deliveries_per_s"])["rate"]
            found["at_70pct"] = await latency_at(stack, n, best_rate * 0.7)
            results.setdefault(name, {})[n] = found
            print(json.dumps(found), file=sys.stderr, flush=True)
    idle: dict[str, Any] = {}
    if args.idle:
        for name in args.stacks.split(","):
            idle[name] = await idle_memory(STACKS[name], args.idle)
            print(json.dumps(idle[name]), file=sys.stderr, flush=True)
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "fanout.json").write_text(json.dumps(results, indent=2))
    if idle:
        (out / "idle.json").write_text(json.dumps(idle, indent=2))
    (out / "fanout.md").write_text(_table(results))
    n = 1000
    summary: dict[str, Any] = {
        name: {
            "deliveries_per_s": r[n]["max_deliveries_per_s"],
            "p99_ms": r[n]["at_70pct"]["p99_ms"],
            "server_cpu": r[n]["server_cpu_at_max"],
            "client_cpu": r[n]["client_cpu_at_max"],
        }
        for name, r in results.items()
        if n in r
    }
    xs = summary.get("xshathra", {}).get("deliveries_per_s")
    for peer in ("raw", "node_ws", "python_socketio"):
        if xs and peer in summary and summary[peer]["deliveries_per_s"]:
            summary[f"xshathra/{peer}"] = round(xs / summary[peer]["deliveries_per_s"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
