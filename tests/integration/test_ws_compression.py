"""permessage-deflate on the engine's WebSocket (XSHATHRA_WEBSOCKET_COMPRESSION): off by
default; when on, a client offering it gets messages of at least the minimum size compressed
(RSV1), each decodable alone (no context takeover), and may send compressed commands.

Byte-level checks use a hand-made client on a socket; centrifuge-python and centrifuge-js
(which offer the extension by default) show the real clients negotiate it and work."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from centrifuge import Client

from tests.integration.test_engine_js_client import start_js
from tests.support.clients import Recorder, SubEvents, engine_api, make_client, realtime_token
from tests.support.rawws import ENGINE_PATH, recv_exactly
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]
MIN_SIZE = 200
OFFER = "permessage-deflate; client_max_window_bits"
BIG = {"text": "a compressible sentence, said again and again. " * 40}


@pytest.fixture(scope="module")
def on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "XSHATHRA_WEBSOCKET_COMPRESSION": "true",
        "XSHATHRA_WEBSOCKET_COMPRESSION_MIN_SIZE": str(MIN_SIZE),
    }
    with running_server(tmp_path_factory.mktemp("on"), env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("off")) as proc:
        yield proc


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.disconnect()


class RawClient:
    """A WebSocket client by hand that may offer permessage-deflate, reading frames with
    their RSV1 bit and inflating compressed ones as RFC 7692 says."""

    def __init__(self, server: ServerProcess, extensions: str | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
        self.sock.sendall(
            (
                f"GET {ENGINE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += recv_exactly(self.sock, 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.response = head.decode().lower()
        self.next_id = 1

    def send(self, command: Json, *, compress: bool = False) -> int:
        command = {"id": self.next_id, **command}
        self.next_id += 1
        payload, first = json.dumps(command).encode(), 0x81
        if compress:
            deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = (deflater.compress(payload) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
            first |= 0x40
        self.send_frame(first, payload)
        return int(command["id"])

    def send_frame(self, first: int, payload: bytes) -> None:
        mask = secrets.token_bytes(4)
        n = len(payload)
        size = bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + struct.pack("!H", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes((first,)) + size + mask + masked)

    def read(self) -> tuple[int, bool, bytes]:
        """The next frame: opcode, whether it came compressed, its payload (inflated)."""
        first, second = recv_exactly(self.sock, 2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", recv_exactly(self.sock, 2))[0]
        elif size == 127:
            size = struct.unpack("!Q", recv_exactly(self.sock, 8))[0]
        payload = recv_exactly(self.sock, size)
        compressed = bool(first & 0x40)
        if compressed:  # a fresh inflater per message: the server takes over no context
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        return first & 0x0F, compressed, payload

    def replies(self) -> Iterator[tuple[bool, Json]]:
        """Every reply or push, with whether its frame was compressed."""
        while True:
            opcode, compressed, payload = self.read()
            if opcode == 0x8:
                raise AssertionError(f"closed: {payload!r}")
            for line in payload.split(b"\n"):
                yield compressed, json.loads(line)

    def until(self, pred: Any) -> tuple[bool, Json]:
        for compressed, reply in self.replies():
            if pred(reply):
                return compressed, reply
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.sock.close()


def subscribed_raw(server: ServerProcess, extensions: str | None, channel: str) -> RawClient:
    app = server.create_app(name="deflate")
    raw = RawClient(server, extensions)
    raw.send({"connect": {"token": realtime_token(server, app, "u1")}})
    raw.until(lambda r: "connect" in r)
    sid = raw.send({"subscribe": {"channel": channel}})
    raw.until(lambda r: r.get("id") == sid)
    raw.app = app  # type: ignore[attr-defined]
    return raw


def test_compression_is_off_by_default(off: ServerProcess) -> None:
    """A client offering deflate to a default server: not negotiated, frames plain."""
    raw = subscribed_raw(off, OFFER, "public:plain")
    try:
        assert "sec-websocket-extensions" not in raw.response
        engine_api(off, raw.app, "publish", {"channel": "public:plain", "data": BIG})  # type: ignore[attr-defined]
        compressed, push = raw.until(lambda r: "push" in r and "pub" in r["push"])
        assert not compressed and push["push"]["pub"]["data"] == BIG
    finally:
        raw.close()


def test_offering_client_gets_compressed_frames_when_on(on: ServerProcess) -> None:
    """When on: negotiated with no context takeover either way; a large publication comes
    compressed (and inflates alone), a small one plain; compressed commands are understood."""
    raw = subscribed_raw(on, OFFER, "public:z")
    try:
        extension_line = next(
            line
            for line in raw.response.split("\r\n")
            if line.startswith("sec-websocket-extensions")
        )
        assert "permessage-deflate" in extension_line
        assert "server_no_context_takeover" in extension_line
        assert "client_no_context_takeover" in extension_line
        app = raw.app  # type: ignore[attr-defined]
        for _ in range(2):  # two in a row: each inflates with a fresh inflater
            engine_api(on, app, "publish", {"channel": "public:z", "data": BIG})
            compressed, push = raw.until(lambda r: "push" in r and "pub" in r["push"])
            assert compressed and push["push"]["pub"]["data"] == BIG
        engine_api(on, app, "publish", {"channel": "public:z", "data": 1})
        compressed, push = raw.until(lambda r: "push" in r and "pub" in r["push"])
        assert not compressed and push["push"]["pub"]["data"] == 1
        hid = raw.send({"history": {"channel": "public:z", "limit": 10}}, compress=True)
        compressed, reply = raw.until(lambda r: r.get("id") == hid)
        assert compressed and len(reply["history"]["publications"]) == 3
    finally:
        raw.close()


def test_client_not_offering_gets_plain_frames_when_on(on: ServerProcess) -> None:
    raw = subscribed_raw(on, None, "public:noffer")
    try:
        assert "sec-websocket-extensions" not in raw.response
        engine_api(on, raw.app, "publish", {"channel": "public:noffer", "data": BIG})  # type: ignore[attr-defined]
        compressed, push = raw.until(lambda r: "push" in r and "pub" in r["push"])
        assert not compressed and push["push"]["pub"]["data"] == BIG
    finally:
        raw.close()


def test_garbage_compressed_data_closes_with_1007(on: ServerProcess) -> None:
    """A compressed frame that does not inflate ends the connection with 1007; the node
    serves on."""
    raw = subscribed_raw(on, OFFER, "public:bad")
    try:
        raw.send_frame(0xC1, b"\xff\xfe\xfd not deflate")
        while True:
            opcode, _, payload = raw.read()
            if opcode == 0x8:
                assert struct.unpack("!H", payload[:2])[0] == 1007
                break
    finally:
        raw.close()
    again = subscribed_raw(on, OFFER, "public:bad")
    again.close()


async def test_centrifuge_python_negotiates_and_works(
    on: ServerProcess, clients: list[Client]
) -> None:
    """centrifuge-python offers deflate (websockets' default): the server accepts, and its
    compressed commands and our compressed publications work end to end."""
    app = on.create_app(name="deflate-py")
    rec = Recorder()
    client = make_client(on, rec, token=realtime_token(on, app, "py"))
    clients.append(client)
    await client.connect()
    await client.ready(5)
    # The client's own connection object (websockets) reports what was negotiated.
    extensions = client._conn.protocol.extensions  # type: ignore[union-attr]
    assert [e.name for e in extensions] == ["permessage-deflate"]
    sub = client.new_subscription("public:py", SubEvents(rec))
    await sub.subscribe()
    await sub.ready(5)
    for n in range(3):
        engine_api(on, app, "publish", {"channel": "public:py", "data": {**BIG, "n": n}})
    got = [(await rec.next("publication")).pub.data for _ in range(3)]
    assert got == [{**BIG, "n": n} for n in range(3)]
    history = await sub.history(limit=10)
    assert [p.data["n"] for p in history.publications] == [0, 1, 2]


async def test_centrifuge_js_works_with_compression(on: ServerProcess) -> None:
    """centrifuge-js over the `ws` package (which offers deflate by default) gets large and
    small publications intact."""
    app = on.create_app(name="deflate-js")
    async with start_js(on, app, XS_CHANNEL="public:js") as js:
        await js.next("subscribed")
        engine_api(on, app, "publish", {"channel": "public:js", "data": BIG})
        assert (await js.next("publication"))["data"] == BIG
        engine_api(on, app, "publish", {"channel": "public:js", "data": {"small": True}})
        assert (await js.next("publication"))["data"] == {"small": True}
