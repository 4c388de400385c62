"""The stacks under test and what every scenario shares: starting a server pinned to its core,
opening Python connections in batches (the recovery scenario's; the load connections are the C
client's, bench/loadclient.py), publishing at a set rate, and reading CPU and memory."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import jwt

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PY = sys.executable
SERVER_CORE, CLIENT_CORE = "0", "1"
PUBLISHERS = 8  # the publisher's connections by default, each with one request in flight
# A namespace as a Centrifugo user would configure broadcast fan-out: history for recovery,
# no presence or join/leave (N joins to N subscribers would be N² messages at setup).
NAMESPACE = {"history_size": 100, "history_ttl": 600, "allow_subscribe_for_client": True}
CHANNEL = "bench:fanout"
PUSHER_CHANNEL = "bench-fanout"  # Pusher names have no namespace colon
XS_PATH = "/realtime/connection/websocket"
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"
CONNECT_BATCH = 500  # connections opened at once: more can overflow a listen backlog
READY_TIMEOUT = 120.0
# Connections one 127.0.0.x source address takes towards one server port: the ephemeral range
# (32768-60999 by default) holds about 28,000. Above this many clients, connection i leaves from
# 127.0.0.(1 + i % sources), which loopback answers (the whole of 127/8 is local).
PER_SOURCE = 25_000


def sources_for(n: int) -> int:
    """How many 127.0.0.x source addresses n connections to one port need (1: no binding)."""
    return -(-n // PER_SOURCE)


def source_address(i: int, n: int) -> tuple[str, int] | None:
    """Connection i's local address among n (None: the kernel's choice, as below PER_SOURCE)."""
    sources = sources_for(n)
    return None if sources == 1 else (f"127.0.0.{1 + i % sources}", 0)


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


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Stack:
    name: str
    command: Callable[[int, Path], list[str]]
    path: str
    hello: Callable[[dict[str, Any]], list[bytes]]  # the frames a client sends once upgraded
    publish_path: str
    publish_body: Callable[[bytes, dict[str, Any]], bytes]
    headers: Callable[[dict[str, Any]], dict[str, str]] = lambda ctx: {}
    env: dict[str, str] = field(default_factory=dict)
    marker: bytes = b'"t":'  # occurs once per publication as the client receives it
    # (the server's application ping payload, the client's answer); the ping may also be one
    # line of a newline-batched payload (Centrifuge JSON).
    ping: tuple[bytes, bytes] | None = None
    # What arrives once the server has taken the client on (subscribe reply, socket.io
    # CONNECT ack); empty where the upgrade alone does it.
    ready_marker: bytes = b""
    channels: bool = False  # has named channels, so the many-channels and recovery scenarios
    # "websocket", or "sse": Server-Sent Events, the hello being the GET's query string
    transport: str = "websocket"
    # The load client offers permessage-deflate and inflates compressed messages.
    deflate: bool = False
    # Binary frames of the Centrifuge protobuf format: the load client sends its hello as
    # binary frames and answers protobuf pings itself (`ping` is then None).
    protobuf: bool = False
    # The WebSocket path once the server is set up, where it depends on the app (Pusher's key).
    path_for: Callable[[dict[str, Any]], str] | None = None

    @property
    def is_node(self) -> bool:
        return self.command(0, Path("."))[0] == "node"


def xs_token(ctx: dict[str, Any], **claims: Any) -> str:
    return jwt.encode(
        {
            "sub": f"u{secrets.token_hex(3)}",
            "app_id": ctx["app_id"],
            "exp": int(time.time()) + 3600,
            **claims,
        },
        ctx["app_secret"],
        algorithm="HS256",
    )


def xs_sse_hello(ctx: dict[str, Any]) -> list[bytes]:
    """A uni_sse connection's query: the connect request, its token subscribing the client to
    the channel on the server's side (a unidirectional client cannot subscribe itself)."""
    request = json.dumps({"token": xs_token(ctx, channels=[CHANNEL])})
    return [b"?cf_connect=" + quote(request, safe="").encode()]


def xs_hello(ctx: dict[str, Any], *subscribes: dict[str, Any]) -> list[bytes]:
    """One frame: connect (id 1) then each subscribe (ids 2, 3, …), newline-separated as the
    Centrifuge JSON protocol batches commands."""
    commands = [{"id": 1, "connect": {"token": xs_token(ctx)}}]
    commands += [{"id": i, "subscribe": s} for i, s in enumerate(subscribes, start=2)]
    return [b"\n".join(json.dumps(c).encode() for c in commands)]


def xs_protobuf_hello(ctx: dict[str, Any], *subscribes: dict[str, Any]) -> list[bytes]:
    """The same hello in the protobuf format: one binary frame of length-delimited commands,
    built with the server's own generated module (the wire format is the same as any
    client's)."""
    from xshathra.protocol import client_pb2 as pb

    commands = [pb.Command(id=1, connect=pb.ConnectRequest(token=xs_token(ctx)))]
    commands += [
        pb.Command(id=i, subscribe=pb.SubscribeRequest(**s)) for i, s in enumerate(subscribes, 2)
    ]
    frame = b""
    for command in commands:
        body = command.SerializeToString()
        n, prefix = len(body), bytearray()
        while n >= 0x80:
            prefix.append(n & 0x7F | 0x80)
            n >>= 7
        prefix.append(n)
        frame += bytes(prefix) + body
    return [frame]


def xs_ready(last_id: int) -> bytes:
    """The start of the reply to the subscribe with this id; an error reply does not match."""
    return b'{"id":%d,"subscribe"' % last_id


def xs_publish(channel: str, data: bytes) -> bytes:
    return b'{"channel":"' + channel.encode() + b'","data":' + data + b"}"


def _node(script: str) -> Callable[[int, Path], list[str]]:
    return lambda port, tmp: ["node", str(BENCH / "peers" / script), str(port)]


def _python(script: str) -> Callable[[int, Path], list[str]]:
    return lambda port, tmp: [PY, str(BENCH / "peers" / script), str(port)]


def _socketio(name: str, command: Callable[[int, Path], list[str]]) -> Stack:
    """A socket.io server: Engine.IO v4 over WebSocket, the client joins namespace "/" (`40`);
    each publication is `42["msg","<body as a JSON string>"]`; the server pings with `2`."""
    return Stack(
        name,
        command,
        SOCKETIO_PATH,
        lambda ctx: [b"40"],
        "/publish",
        lambda d, c: d,
        marker=b'42["msg"',
        ping=(b"2", b"3"),
        ready_marker=b"40{",
    )


def _plain(name: str, command: Callable[[int, Path], list[str]]) -> Stack:
    """A bare WebSocket server: every client gets every publication, no protocol on top."""
    return Stack(name, command, "/", lambda ctx: [], "/publish", _raw)


def _raw(data: bytes, ctx: dict[str, Any]) -> bytes:
    return data


STACKS: dict[str, Stack] = {
    "xshathra": Stack(
        "xshathra",
        lambda port, tmp: [PY, "-m", "xshathra", "serve", "--port", str(port)],
        XS_PATH,
        lambda ctx: xs_hello(ctx, {"channel": CHANNEL}),
        "/realtime/api/publish",
        lambda data, ctx: xs_publish(CHANNEL, data),
        lambda ctx: {"X-API-Key": ctx["api_key"]},
        {"XSHATHRA_LOG_LEVEL": "warning", "XSHATHRA_CLIENT_COMMAND_BURST": "1000"},
        marker=b'"pub"',
        # `{}` is a ping alone or as one line of a batched frame; publications never hold it.
        ping=(b"{}", b"{}"),
        ready_marker=xs_ready(2),
        channels=True,
    ),
    # The same server and channel, its clients on unidirectional SSE (no ping to answer).
    "xshathra_sse": Stack(
        "xshathra_sse",
        lambda port, tmp: [PY, "-m", "xshathra", "serve", "--port", str(port)],
        "/realtime/connection/uni_sse",
        xs_sse_hello,
        "/realtime/api/publish",
        lambda data, ctx: xs_publish(CHANNEL, data),
        lambda ctx: {"X-API-Key": ctx["api_key"]},
        {"XSHATHRA_LOG_LEVEL": "warning"},
        marker=b'"pub"',
        ready_marker=b'{"connect"',
        transport="sse",
    ),
    # The same server with permessage-deflate on for every message (minimum size 0): what
    # compression costs the server at fan-out, where a publication is compressed once per
    # (codec, framing) group and the frame shared by all its connections.
    "xshathra_deflate": Stack(
        "xshathra_deflate",
        lambda port, tmp: [PY, "-m", "xshathra", "serve", "--port", str(port)],
        XS_PATH,
        lambda ctx: xs_hello(ctx, {"channel": CHANNEL}),
        "/realtime/api/publish",
        lambda data, ctx: xs_publish(CHANNEL, data),
        lambda ctx: {"X-API-Key": ctx["api_key"]},
        {
            "XSHATHRA_LOG_LEVEL": "warning",
            "XSHATHRA_CLIENT_COMMAND_BURST": "1000",
            "XSHATHRA_WEBSOCKET_COMPRESSION": "true",
            "XSHATHRA_WEBSOCKET_COMPRESSION_MIN_SIZE": "0",
        },
        marker=b'"pub"',
        ping=(b"{}", b"{}"),
        ready_marker=xs_ready(2),
        deflate=True,
    ),
    # The same server and load, the clients speaking protobuf (`?format=protobuf`): the cost of
    # the binary format against JSON. Publication data stays the publisher's JSON bytes, so
    # `"t":` marks each publication as it does for the bare peers. Fan-out and idle only.
    "xshathra_protobuf": Stack(
        "xshathra_protobuf",
        lambda port, tmp: [PY, "-m", "xshathra", "serve", "--port", str(port)],
        XS_PATH + "?format=protobuf",
        lambda ctx: xs_protobuf_hello(ctx, {"channel": CHANNEL}),
        "/realtime/api/publish",
        lambda data, ctx: xs_publish(CHANNEL, data),
        lambda ctx: {"X-API-Key": ctx["api_key"]},
        {"XSHATHRA_LOG_LEVEL": "warning", "XSHATHRA_CLIENT_COMMAND_BURST": "1000"},
        marker=b'"t":',
        # The reply to subscribe id 2: field 1 (id) = 2, then field 6 (subscribe).
        ready_marker=b"\x08\x02\x32",
        protobuf=True,
    ),
    # The same server and fan-out, its clients speaking Pusher protocol 7 (pusher-js's frames):
    # each publication is one `{"event":"bench","channel":…,"data":"<body as a string>"}`.
    "xshathra_pusher": Stack(
        "xshathra_pusher",
        lambda port, tmp: [PY, "-m", "xshathra", "serve", "--port", str(port)],
        "/app/",
        lambda ctx: [
            json.dumps({"event": "pusher:subscribe", "data": {"channel": PUSHER_CHANNEL}}).encode()
        ],
        "/realtime/api/publish",
        lambda data, ctx: (
            b'{"channel":"%s","tags":{"event":"bench"},"data":%s}' % (PUSHER_CHANNEL.encode(), data)
        ),
        lambda ctx: {"X-API-Key": ctx["api_key"]},
        {"XSHATHRA_LOG_LEVEL": "warning", "XSHATHRA_CLIENT_COMMAND_BURST": "1000"},
        marker=b'{"event":"bench"',
        ping=(b'{"event":"pusher:ping","data":{}}', b'{"event":"pusher:pong","data":{}}'),
        ready_marker=b"pusher_internal:subscription_succeeded",
        path_for=lambda ctx: f"/app/{ctx['client_api_key']}?protocol=7",
    ),
    "raw": _plain("raw", _python("raw_server.py")),
    "node_ws": _plain("node_ws", _node("node_ws.mjs")),
    "python_socketio": _socketio("python_socketio", _python("py_socketio.py")),
    "node_socketio": _socketio("node_socketio", _node("node_socketio.mjs")),
}


def missing(stack: Stack) -> str | None:
    """Why this stack cannot run here, or None."""
    if stack.is_node and not shutil.which("node"):
        return "node is not installed"
    if stack.is_node and not (BENCH / "node_modules").is_dir():
        return "bench/node_modules is missing (cd bench && npm ci)"
    return None


async def open_clients(
    port: int,
    n: int,
    factory: Callable[[int, asyncio.Future[Any]], asyncio.Protocol],
    batch: int = CONNECT_BATCH,
) -> list[asyncio.BaseTransport]:
    """Open n connections, `batch` at a time, each batch awaited until every client in it is
    ready: one burst of thousands of handshakes would overflow the listen backlog and time
    out connects, and measuring before everyone is subscribed would undercount."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    for start in range(0, n, batch):
        waits: list[asyncio.Future[Any]] = []
        for i in range(start, min(n, start + batch)):
            ready: asyncio.Future[Any] = loop.create_future()
            transport, _ = await loop.create_connection(
                functools.partial(factory, i, ready),
                "127.0.0.1",
                port,
                local_addr=source_address(i, n),
            )
            transports.append(transport)
            waits.append(ready)
        try:
            await asyncio.wait_for(asyncio.gather(*waits), READY_TIMEOUT)
        except TimeoutError:
            late = sum(not w.done() for w in waits)
            raise TimeoutError(f"{late} of {len(waits)} clients not ready") from None
    return transports


def close_all(transports: list[asyncio.BaseTransport]) -> None:
    for transport in transports:
        transport.close()


def free_port() -> int:
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
    """Keep-alive HTTP connections sending publications at a set rate. `body` wraps each
    payload (which carries its send time) into a request body; it is called once per
    publication, so it may vary the target channel."""

    def __init__(
        self,
        port: int,
        path: str,
        headers: dict[str, str],
        body: Callable[[bytes], bytes],
        connections: int = PUBLISHERS,
    ) -> None:
        self.port, self.path, self.headers, self.body = port, path, headers, body
        self.queue: asyncio.Queue[None] = asyncio.Queue(maxsize=10_000)
        self.sent = 0
        self.failed = 0  # non-2xx or `error` answers: a rate limit, a refused publication
        self.skipped = 0  # not sent: the server answered too slowly for the asked rate
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
            answer = await reader.readexactly(length)
            self.sent += 1
            # The server API answers a failed command with 200 and an `error` object, as
            # Centrifugo's does: that is a failed publication too.
            if not head.startswith(b"HTTP/1.1 2") or answer.startswith(b'{"error"'):
                self.failed += 1

    async def run(self, rate: float, seconds: float) -> None:
        start = time.monotonic()
        due = 0.0
        while (elapsed := time.monotonic() - start) < seconds:
            target = int(rate * elapsed)
            while due < target:
                if self.queue.full():  # the server is far behind: the rate is not reachable
                    self.skipped += 1
                else:
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
    async with serving_nodes(stack, extra_env) as (ports, procs, ctx):
        yield ports[0], procs[0], ctx


@contextlib.asynccontextmanager
async def serving_nodes(
    stack: Stack,
    extra_env: dict[str, str] | None = None,
    count: int = 1,
    database_url: str | None = None,
) -> AsyncIterator[tuple[list[int], list[subprocess.Popen[bytes]], dict[str, Any]]]:
    """`count` nodes of one stack, all pinned to the server core, sharing the admin key and
    the database (by default one SQLite file in WAL mode, which several nodes may open); with
    more than one, `extra_env` must name a shared broker. Node 1 starts first and the
    application is set up through it before the others start, so that the database's
    migrations run once. Yields (ports, processes, app context)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{stack.name}-"))
    admin = "adm_" + secrets.token_hex(16)  # 32+ bytes: a weak admin key stops the start
    env = {
        **os.environ,
        "XSHATHRA_ADMIN_API_KEY": admin,
        "XSHATHRA_DATABASE_URL": database_url or f"sqlite:///{tmp / 'b.db'}",
        **stack.env,
        **(extra_env or {}),
    }
    ports: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ctx: dict[str, Any] = {}
        for i in range(count):
            port = free_port()
            node_dir = tmp / f"node{i + 1}"
            node_dir.mkdir()
            log = _log_file(f"{stack.name}-{port}.log")
            procs.append(
                subprocess.Popen(
                    ["taskset", "-c", SERVER_CORE, *stack.command(port, node_dir)],
                    env=env,
                    cwd=node_dir,
                    stdout=log,
                    stderr=log,
                )
            )
            if not isinstance(log, int):
                log.close()  # the server holds its own copy
            ports.append(port)
            await wait_port(port)
            if i == 0:
                ctx = await _setup(stack, port, admin)
            else:
                await _healthy(port)
        yield ports, procs, ctx
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _log_file(name: str) -> int | IO[bytes]:
    """Where a server's output goes: nowhere, or with BENCH_LOGS=<dir> a file there (to see
    why a server refused or failed something; logging costs the server time, so not in a
    measured run)."""
    folder = os.environ.get("BENCH_LOGS")
    if not folder:
        return subprocess.DEVNULL
    Path(folder).mkdir(parents=True, exist_ok=True)
    return (Path(folder) / name).open("ab")


async def _healthy(port: int) -> None:
    """Until the node's health endpoint answers 200 (its database and broker are up)."""
    import httpx

    async with httpx.AsyncClient() as http:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/realtime/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"node on port {port} never became healthy")


async def _setup(stack: Stack, port: int, admin: str) -> dict[str, Any]:
    """Xshathra only: an application with the bench namespace; its keys are the context."""
    if not stack.name.startswith("xshathra"):
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
