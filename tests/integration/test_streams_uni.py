"""The stream endpoints without an SDK: unidirectional `uni_http_stream` and `uni_sse` read with
plain httpx, `uni_websocket` with a plain WebSocket client, and the emulation endpoint driven by
hand; Centrifugo's connect request and push shapes, its pings, server-side subscriptions from
the token, CORS, and bad input (documented errors, the node stays up), a reconnect storm, a
client that stops reading, and a shutdown with streams open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.integration.test_engine_bad_input import connect as ws_connect
from tests.support.clients import engine_api, realtime_token
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]
LIMIT = 256 * 1024  # the slow-consumer limit of the module's node
CHANNEL = "public:uni"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"XSHATHRA_PING_INTERVAL": "1", "XSHATHRA_CLIENT_QUEUE_MAX_BYTES": str(LIMIT)}
    with running_server(tmp_path_factory.mktemp("uni"), env=env) as proc:
        yield proc


async def assert_still_serving(node: ServerProcess, app: Json) -> None:
    """Another client connects, subscribes and receives: the bad input hurt nobody else.
    (This node pings every second: pings, `{}`, are skipped.)"""
    async with websockets.connect(node.ws_url) as ws:
        assert "connect" in await ws_connect(ws, realtime_token(node, app, "bystander"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:ok"}}))
        await asyncio.to_thread(
            engine_api, node, app, "publish", {"channel": "public:ok", "data": "ok"}
        )
        seen: list[Json] = []
        while not any("push" in m and "pub" in m["push"] for m in seen):
            frame = await asyncio.wait_for(ws.recv(), 5)
            seen += [json.loads(line) for line in str(frame).split("\n") if line]
        assert any("subscribe" in m for m in seen if m.get("id") == 2), seen
        assert [m["push"]["pub"]["data"] for m in seen if "pub" in m.get("push", {})] == ["ok"]


def url(node: ServerProcess, name: str) -> str:
    return f"{node.base_url}/realtime/connection/{name}"


async def lines(response: httpx.Response) -> AsyncIterator[Any]:
    """Messages of an HTTP stream: one JSON value per line."""
    async for line in response.aiter_lines():
        if line:
            yield json.loads(line)


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each Server-Sent Event, as an EventSource parses them."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


async def first(stream: AsyncIterator[Any], where: Any = lambda _: True, timeout: float = 5) -> Any:
    async def find() -> Any:
        async for item in stream:
            if where(item):
                return item
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), timeout)


def publish(node: ServerProcess, app: Json, data: Any, channel: str = CHANNEL) -> None:
    engine_api(node, app, "publish", {"channel": channel, "data": data})


# --- unidirectional -------------------------------------------------------------------------------


async def test_uni_http_stream(node: ServerProcess) -> None:
    """POST a ConnectRequest: a `connect` push naming the token's channels, then bare
    publication pushes, and `null` as the ping."""
    app = node.create_app(name="uni-http")
    token = realtime_token(node, app, "u1", channels=[CHANNEL])
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("POST", url(node, "uni_http_stream"), json={"token": token}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        stream = lines(r)
        connect = (await first(stream))["connect"]
        assert connect["subs"] == {
            CHANNEL: {"recoverable": True, "epoch": connect["subs"][CHANNEL]["epoch"]}
        }
        assert connect["ping"] == 1 and "pong" not in connect and "session" not in connect
        await asyncio.to_thread(publish, node, app, {"n": 1})
        pub = await first(stream, lambda m: m is not None)
        assert pub == {"channel": CHANNEL, "pub": {"data": {"n": 1}, "offset": 1}}
        assert await first(stream, timeout=3) is None  # the ping; no pong awaited: still here
        assert await first(stream, timeout=3) is None


async def test_uni_sse_get_and_post(node: ServerProcess) -> None:
    """GET with `cf_connect` (a browser EventSource) and POST with the request as body: one
    event per push, `event: ping` as the ping; a server-side subscription made later arrives
    as a `subscribe` push."""
    app = node.create_app(name="uni-sse")
    token = realtime_token(node, app, "u2", channels=[CHANNEL])
    async with httpx.AsyncClient(timeout=10) as http:
        params = {"cf_connect": json.dumps({"token": token})}
        async with http.stream("GET", url(node, "uni_sse"), params=params) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
            kind, data = await first(events)
            assert kind == "message" and CHANNEL in json.loads(data)["connect"]["subs"]
            await asyncio.to_thread(publish, node, app, "hello")
            _, data = await first(events, lambda e: e[0] == "message")
            assert json.loads(data) == {"channel": CHANNEL, "pub": {"data": "hello", "offset": 1}}
            assert await first(events, timeout=3) == ("ping", "")
            await asyncio.to_thread(
                engine_api, node, app, "subscribe", {"user": "u2", "channel": "public:later"}
            )
            _, data = await first(events, lambda e: e[0] == "message")
            assert json.loads(data)["channel"] == "public:later" and "subscribe" in json.loads(data)
        async with http.stream("POST", url(node, "uni_sse"), json={"token": token}) as r:
            _, data = await first(sse_events(r))
            assert "connect" in json.loads(data)


async def test_uni_websocket(node: ServerProcess) -> None:
    """The first message is the ConnectRequest (or `cf_connect` in the URL); then one push per
    message, `{}` as the ping; a server disconnect is a `disconnect` push, then the close."""
    app = node.create_app(name="uni-ws")
    token = realtime_token(node, app, "u3", channels=[CHANNEL])
    ws_url = url(node, "uni_websocket").replace("http", "ws", 1)
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"token": token}))
        assert CHANNEL in json.loads(await ws.recv())["connect"]["subs"]
        await asyncio.to_thread(publish, node, app, 1)
        await asyncio.to_thread(publish, node, app, 2)
        got: list[Json] = []
        pings = 0
        while len(got) < 2 or pings == 0:  # pings ({}) come every second, between the pushes
            message = json.loads(await asyncio.wait_for(ws.recv(), 3))
            if message == {}:
                pings += 1
            else:
                got.append(message)
        assert got == [{"channel": CHANNEL, "pub": {"data": n, "offset": n}} for n in (1, 2)]
        await asyncio.to_thread(engine_api, node, app, "disconnect", {"user": "u3"})
        messages = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        assert messages[-1] == {"disconnect": {"code": 3503, "reason": "force disconnect"}}
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 3503
    query = httpx.QueryParams({"cf_connect": json.dumps({"token": token})})
    async with websockets.connect(f"{ws_url}?{query}") as ws:
        assert "connect" in json.loads(await ws.recv())


async def test_uni_refused_connect_is_a_disconnect_push(node: ServerProcess) -> None:
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("POST", url(node, "uni_http_stream"), json={"token": "not-a-token"}) as r,
    ):
        assert [m async for m in lines(r)] == [
            {"disconnect": {"code": 3500, "reason": "invalid token"}}
        ]


# --- emulation by hand ----------------------------------------------------------------------------


async def test_emulation_endpoint_by_hand(node: ServerProcess) -> None:
    """A bidirectional stream names its session and node in the connect reply; commands posted
    with them are answered on the stream. CORS: the preflight and answers echo the Origin; an
    origin the app does not allow is refused (403, no CORS headers)."""
    app = node.create_app(name="emu", allowed_domain="example.com")
    token = realtime_token(node, app, "u4")
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "POST",
            url(node, "http_stream"),
            content=json.dumps({"id": 1, "connect": {"token": token}}),
            headers={"Origin": "https://app.example.com"},
        ) as r,
    ):
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        stream = lines(r)
        connect = (await first(stream))["connect"]
        session, node_id = connect["session"], connect["node"]
        assert len(session) >= 24 and connect["pong"] is True

        preflight = await http.options(
            f"{node.base_url}/realtime/emulation",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert preflight.headers["access-control-allow-headers"] == "content-type"
        assert preflight.headers["access-control-allow-credentials"] == "true"

        command = json.dumps({"id": 2, "subscribe": {"channel": CHANNEL}})
        request = {"session": session, "node": node_id, "data": command}
        ok = await http.post(
            f"{node.base_url}/realtime/emulation",
            json=request,
            headers={"Origin": "https://app.example.com"},
        )
        assert ok.status_code == 204 and ok.headers["access-control-allow-origin"]
        reply = await first(stream, lambda m: m.get("id") == 2)
        assert reply["subscribe"]["recoverable"] is True

        bad = await http.post(
            f"{node.base_url}/realtime/emulation",
            json={**request, "data": json.dumps({"id": 3, "unsubscribe": {"channel": CHANNEL}})},
            headers={"Origin": "https://evil.test"},
        )
        assert bad.status_code == 403 and bad.json() == {"error": "origin not allowed"}
        assert "access-control-allow-origin" not in bad.headers
        await asyncio.to_thread(publish, node, app, "still subscribed")
        pub = await first(stream, lambda m: "push" in m and "pub" in m["push"])
        assert pub["push"]["pub"]["data"] == "still subscribed"


async def test_connect_from_an_origin_the_app_does_not_allow(node: ServerProcess) -> None:
    app = node.create_app(name="emu-origin", allowed_domain="example.com")
    token = realtime_token(node, app, "u5")
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "GET",
            url(node, "uni_sse"),
            params={"cf_connect": json.dumps({"token": token})},
            headers={"Origin": "https://evil.test"},
        ) as r,
    ):
        events = [json.loads(d) async for _, d in sse_events(r)]
        assert events == [{"disconnect": {"code": 3507, "reason": "origin not allowed"}}]


# --- bad input ------------------------------------------------------------------------------------


async def test_bad_input_gets_documented_errors(node: ServerProcess) -> None:
    app = node.create_app(name="bad")
    emulation = f"{node.base_url}/realtime/emulation"
    key = {"X-API-Key": str(app["api_key"])}
    async with httpx.AsyncClient(timeout=10) as http:
        for name in ("sse", "uni_sse"):
            r = await http.get(url(node, name), params={"cf_connect": "{not json"})
            assert r.status_code == 400
            assert r.json() == {"error": "cf_connect is not a valid connect request"}
            r = await http.get(url(node, name))
            assert r.status_code == 400
            assert r.json() == {"error": "cf_connect query parameter required"}
        r = await http.post(url(node, "http_stream"), content=b'{"id":1,"subscribe":{}}')
        assert r.status_code == 400
        assert r.json() == {"error": "request body is not a valid connect request"}
        r = await http.post(url(node, "uni_http_stream"), content=b"\xff\xfe garbage")
        assert r.status_code == 400
        r = await http.post(url(node, "uni_http_stream"), content=b"x" * 200_000)
        assert r.status_code == 413 and r.json() == {"error": "request body too large"}
        r = await http.get(url(node, "http_stream"))
        assert r.status_code == 405

        # Centrifugo's answers: an unknown session on a running node, 204 (the client learns
        # from its stream); a node that is not running (or none named), 404.
        info = await http.post(f"{node.base_url}/realtime/api/info", headers=key, json={})
        running = info.json()["result"]["nodes"][0]["uid"]
        r = await http.post(emulation, json={"session": "nope", "node": running, "data": "{}"})
        assert r.status_code == 204
        for other in ("", "elsewhere"):
            r = await http.post(emulation, json={"session": "nope", "node": other, "data": "{}"})
            assert r.status_code == 404 and r.json() == {"error": "unknown node"}
        for body in (b"", b"[]", b'{"session": 5}', b'{"node": "x", "data": "{}"}', b"\x00" * 10):
            r = await http.post(emulation, content=body)
            assert r.status_code == 400, body
            assert r.json() == {"error": "malformed emulation request"}
        assert (await http.get(emulation)).status_code == 405

    ws_url = url(node, "uni_websocket").replace("http", "ws", 1)
    async with websockets.connect(ws_url) as ws:
        await ws.send("not a connect request")
        assert json.loads(await ws.recv())["disconnect"]["code"] == 3501
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    await assert_still_serving(node, app)


async def test_sse_reconnect_storm(node: ServerProcess) -> None:
    """Hundreds of EventSource connections at once, most gone again at once (some before their
    connect is answered), some with garbage: each gets its answer, none is left behind, and the
    node goes on serving."""
    app = node.create_app(name="storm")
    token = realtime_token(node, app, "storm")
    good = {"cf_connect": json.dumps({"id": 1, "connect": {"token": token}})}
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)

    async def reader(http: httpx.AsyncClient) -> str:
        async with http.stream("GET", url(node, "sse"), params=good) as r:
            _, data = await first(sse_events(r), timeout=30)
            return str(json.loads(data)["connect"]["client"])

    async def garbage(http: httpx.AsyncClient) -> int:
        r = await http.get(url(node, "sse"), params={"cf_connect": "\x00garbage"})
        return r.status_code

    async def quitter() -> None:
        with socket.create_connection(("127.0.0.1", node.port)) as sock:
            query = httpx.QueryParams(good)
            sock.sendall(
                f"GET /realtime/connection/sse?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )

    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        results = await asyncio.gather(
            *(reader(http) for _ in range(150)),
            *(garbage(http) for _ in range(100)),
            *(quitter() for _ in range(50)),
        )
    assert len(set(results[:150])) == 150
    assert set(results[150:250]) == {400}
    deadline = time.monotonic() + 15
    while True:
        info = engine_api(node, app, "info", {})
        clients = sum(n.get("num_clients", 0) for n in info["result"]["nodes"])
        if clients == 0:
            break
        assert time.monotonic() < deadline, f"{clients} storm connections left behind"
        await asyncio.sleep(0.2)  # cleanup runs on the node's schedule
    await assert_still_serving(node, app)


async def test_a_stream_that_is_not_read_is_cut_off_as_slow(node: ServerProcess) -> None:
    """A uni_sse client that stops reading: past the queue limit the server writes nothing more
    for it but a `disconnect` push 3008 and ends the stream; the node's other subscribers get
    every publication."""
    app = node.create_app(name="slow")
    token = realtime_token(node, app, "slow", channels=[CHANNEL])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", node.port))
    query = httpx.QueryParams({"cf_connect": json.dumps({"token": token})})
    sock.sendall(f"GET /realtime/connection/uni_sse?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = b""
    while b'"connect"' not in head:
        head += sock.recv(4096)
    data = "x" * 60_000
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("POST", url(node, "uni_http_stream"), json={"token": token}) as fast,
    ):
        stream = lines(fast)
        await first(stream)
        cut = asyncio.Event()

        async def read_all() -> list[int]:
            seen: list[int] = []
            while len(seen) < 150:
                message = await first(stream, lambda m: m is not None, timeout=30)
                if "leave" in message and message["leave"]["info"]["user"] == "slow":
                    cut.set()  # the slow one was dropped: it has a grace period to read
                elif "pub" in message:
                    seen.append(_index(message))
            return seen

        async def drain_once_cut() -> bytes:
            await cut.wait()
            rest = bytearray()
            with contextlib.suppress(OSError):
                while chunk := await asyncio.to_thread(sock.recv, 1 << 20):
                    rest += chunk
            return bytes(rest)

        reading = asyncio.create_task(read_all())
        draining = asyncio.create_task(drain_once_cut())
        for i in range(150):
            await asyncio.to_thread(publish, node, app, {"i": i, "data": data})
        assert await reading == list(range(150))
        rest = await asyncio.wait_for(draining, 20)
    sock.close()
    assert b'{"disconnect":{"code":3008,"reason":"slow","reconnect":true}}' in rest
    assert len(rest) < 150 * 60_000  # what came after the limit was never written
    await assert_still_serving(node, app)


async def test_shutdown_ends_open_streams_at_once(tmp_path: Path) -> None:
    """SIGTERM: every open stream gets a `disconnect` push with 3001 (reconnect) and the node
    exits without waiting out uvicorn's grace period for them."""
    with running_server(tmp_path) as srv:
        app = srv.create_app(name="bye")
        token = realtime_token(srv, app, "u")
        async with (
            httpx.AsyncClient(timeout=20) as http,
            http.stream("POST", url(srv, "uni_http_stream"), json={"token": token}) as r,
            http.stream(
                "GET",
                url(srv, "sse"),
                params={"cf_connect": json.dumps({"id": 1, "connect": {"token": token}})},
            ) as s,
        ):
            uni, events = lines(r), sse_events(s)
            await first(uni)
            await first(events)
            started = time.monotonic()
            srv.process.send_signal(signal.SIGTERM)
            assert [m async for m in uni] == [
                {"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": True}}
            ]
            rest = [json.loads(d) async for _, d in events]
            assert rest[-1] == {
                "push": {"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": True}}
            }
        await asyncio.to_thread(srv.process.wait, 10)
        assert time.monotonic() - started < 8


def _index(message: Json) -> int:
    assert "pub" in message, message
    return int(message["pub"]["data"]["i"])


async def test_a_request_body_sent_beside_the_stream_is_bounded(node: ServerProcess) -> None:
    """An SSE GET that keeps sending a (chunked) body: read and dropped, and past the body limit
    the stream ends with a `disconnect` push 3501 instead of being read for ever."""
    app = node.create_app(name="body-flood")
    query = httpx.QueryParams({"cf_connect": json.dumps({"token": realtime_token(node, app, "f")})})
    chunk = b"%x\r\n%s\r\n" % (8192, b"x" * 8192)

    def flood() -> bytes:
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
            sock.sendall(
                f"GET /realtime/connection/uni_sse?{query} HTTP/1.1\r\nHost: x\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
            )
            received = b""
            with contextlib.suppress(OSError):
                for _ in range(40):  # 320 KiB: past the 64 KiB message limit plus 4 KiB
                    sock.sendall(chunk)
                while part := sock.recv(65536):
                    received += part
            return received

    received = await asyncio.to_thread(flood)  # (its connect may or may not be answered first)
    assert b'{"disconnect":{"code":3501,"reason":"request body too large"}}' in received
    await assert_still_serving(node, app)
