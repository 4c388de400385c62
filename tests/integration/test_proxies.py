"""Backend proxies (SPEC §9): a real local backend answering in Centrifugo's proxy format, the
real server, and real clients (centrifuge-python, raw WebSockets where a close code or an error
reply is the point). Connect without a token, refusals, subscribe, publish rewriting, RPC from
a client and from the server API, refresh, timeouts and 500s, a slow tenant backend under load,
and tenant isolation."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from centrifuge import Client, ClientEventHandler, ConnectedContext
from centrifuge.protocol import client_pb2 as theirs

from tests.integration.test_engine_js_client import JS_DIR, start_js
from tests.integration.test_engine_protobuf import PROTOBUF, frame, next_replies
from tests.support.clients import ClientEvents, Recorder, SubEvents, engine_api
from tests.support.proxy_backend import Json, ok, proxy_backend
from tests.support.server import ServerProcess, running_server
from xshathra.outbound.signing import verify

PER_APP = 50  # the node's bound on one app's proxy calls in flight


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "XSHATHRA_PROXY_CONCURRENCY_PER_APP": str(PER_APP),
        "XSHATHRA_EXPIRED_CLOSE_DELAY": "2",
    }
    with running_server(tmp_path_factory.mktemp("proxies"), env=env) as proc:
        yield proc


def configure(server: ServerProcess, app: Json, **body: Any) -> httpx.Response:
    return httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        json=body,
        headers=server.admin_headers(),
    )


def connect_proxy(endpoint: str, **extra: Any) -> Json:
    return {"client": {"proxy": {"connect": {"enabled": True, "endpoint": endpoint, **extra}}}}


async def raw_connect(
    server: ServerProcess,
    app: Json,
    data: Json | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[websockets.ClientConnection, Json]:
    ws = await websockets.connect(
        f"{server.ws_url}?key={app['client_api_key']}", additional_headers=headers
    )
    await ws.send(json.dumps({"id": 1, "connect": {"data": data} if data else {}}))
    return ws, (await messages(ws))[0]


async def messages(ws: websockets.ClientConnection) -> list[Json]:
    """The replies and pushes of the next frame (newline-delimited JSON)."""
    frame = await asyncio.wait_for(ws.recv(), 10)
    return [json.loads(line) for line in str(frame).splitlines() if line]


async def command(ws: websockets.ClientConnection, cid: int, method: str, params: Json) -> Json:
    await ws.send(json.dumps({"id": cid, method: params}))
    while True:
        for reply in await messages(ws):
            if reply.get("id") == cid:
                return reply


async def closed_with(ws: websockets.ClientConnection) -> int | None:
    await asyncio.wait_for(ws.wait_closed(), 10)
    return ws.close_code


# --- connect ------------------------------------------------------------------------------------


async def test_connect_without_token_applies_the_backends_answer(server: ServerProcess) -> None:
    """The backend's user, info, data, channels and meta make the connection; the request is
    Centrifugo's, carries app_id, is signed with the app secret and forwards only the named
    client headers plus the static ones."""
    app = server.create_app(name="px-connect")
    async with proxy_backend() as backend:
        expire_at = int(time.time()) + 3600
        endpoint = backend.on(
            "/connect",
            lambda body: ok(
                {
                    "user": "u-" + body["data"]["name"],
                    "expire_at": expire_at,
                    "info": {"role": "tester"},
                    "data": {"welcome": True},
                    "channels": ["public:px-srv"],
                    "meta": {"tenant": "t1"},
                }
            ),
        )
        rpc = backend.on("/rpc", lambda body: ok({"data": {"meta": body.get("meta")}}))
        r = configure(
            server,
            app,
            proxies={
                "proxies": [{"name": "rpc", "endpoint": rpc}],
                **connect_proxy(
                    endpoint,
                    http_headers=["Authorization", "X-Session"],
                    http={"static_headers": {"X-Origin": "xshathra"}},
                ),
                "rpc": {"namespaces": [{"name": "", "proxy_enabled": True, "proxy_name": "rpc"}]},
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["application"]["proxies"]["client"]["proxy"]["connect"]["enabled"]

        connected: asyncio.Future[ConnectedContext] = asyncio.get_running_loop().create_future()

        class Events(ClientEventHandler):
            async def on_connected(self, ctx: ConnectedContext) -> None:
                if not connected.done():
                    connected.set_result(ctx)

        client = Client(
            f"{server.ws_url}?key={app['client_api_key']}",
            events=Events(),
            data={"name": "alice"},
            headers={"Authorization": "Bearer abc", "X-Session": "s1", "X-Other": "no"},
        )
        await client.connect()
        try:
            ctx = await asyncio.wait_for(connected, 10)
            assert ctx.data == {"welcome": True}
            (seen,) = backend.requests("/connect")
            body = seen.body
            assert body["app_id"] == app["app_id"] and body["client"] == ctx.client
            assert (body["transport"], body["protocol"], body["encoding"]) == (
                "websocket",
                "json",
                "json",
            )
            assert body["data"] == {"name": "alice"} and body["name"] == "python"
            headers = {k.lower(): v for k, v in seen.headers.items()}
            assert headers["authorization"] == "Bearer abc" and headers["x-session"] == "s1"
            assert "x-other" not in headers and headers["x-origin"] == "xshathra"
            assert verify(
                str(app["app_secret"]),
                headers["x-xshathra-timestamp"],
                seen.raw,
                headers["x-xshathra-signature"],
            )
            # The connection is the backend's user, with its server-side channel and meta.
            presence = engine_api(server, app, "presence", {"channel": "public:px-srv"})
            (present,) = presence["result"]["presence"].values()
            assert present["user"] == "u-alice" and present["conn_info"] == {"role": "tester"}
            result = await client.rpc("echo", {"x": 1})
            assert result.data == {"meta": {"tenant": "t1"}}
            assert backend.requests("/rpc")[0].body["user"] == "u-alice"
        finally:
            await client.disconnect()


async def test_connect_refused_by_error_or_disconnect(server: ServerProcess) -> None:
    """The backend's `error` answers the connect with its code; its `disconnect` closes the
    connection with its code and reason."""
    app = server.create_app(name="px-refuse")
    async with proxy_backend() as backend:

        def decide(body: Json) -> tuple[int, Json, float]:
            if body["data"]["who"] == "error":
                return 200, {"error": {"code": 1403, "message": "not you"}}, 0.0
            return 200, {"disconnect": {"code": 4501, "reason": "banned"}}, 0.0

        assert configure(server, app, proxies=connect_proxy(backend.on("/c", decide))).is_success
        ws, reply = await raw_connect(server, app, {"who": "error"})
        assert reply["error"]["code"] == 1403 and reply["error"]["message"] == "not you"
        await ws.close()
        ws = await websockets.connect(f"{server.ws_url}?key={app['client_api_key']}")
        await ws.send(json.dumps({"id": 1, "connect": {"data": {"who": "disconnect"}}}))
        assert await closed_with(ws) == 4501
        assert ws.close_reason == "banned"


async def test_no_token_without_connect_proxy_is_refused(server: ServerProcess) -> None:
    """Without a connect proxy a token stays required (3500), key or not."""
    app = server.create_app(name="px-none")
    ws, _ = await websockets.connect(server.ws_url), None
    await ws.send(json.dumps({"id": 1, "connect": {}}))
    assert await closed_with(ws) == 3500
    ws = await websockets.connect(f"{server.ws_url}?key={app['client_api_key']}")
    await ws.send(json.dumps({"id": 1, "connect": {}}))
    assert await closed_with(ws) == 3500


async def test_timeout_and_500_answer_temporary_error_100(server: ServerProcess) -> None:
    """A backend slower than the proxy's timeout, or answering 500, gets the client error 100
    (temporary): the connect is not applied and the connection stays open for a retry."""
    app = server.create_app(name="px-fail")
    async with proxy_backend() as backend:
        endpoint = backend.on("/slow", lambda body: ok({"user": "late"}, delay=3.0))
        assert configure(server, app, proxies=connect_proxy(endpoint, timeout="300ms")).is_success
        started = time.monotonic()
        ws, reply = await raw_connect(server, app)
        assert reply["error"] == {
            "code": 100,
            "message": "backend proxy unavailable",
            "temporary": True,
        }
        assert time.monotonic() - started < 2.5
        await ws.close()

        endpoint = backend.on("/500", lambda body: (500, {"oops": 1}, 0.0))
        assert configure(server, app, proxies=connect_proxy(endpoint)).is_success
        ws, reply = await raw_connect(server, app)
        assert reply["error"]["code"] == 100 and reply["error"]["temporary"] is True
        await ws.close()
        metrics = httpx.get(f"{server.base_url}/metrics").text
        assert 'xshathra_proxy_errors_total{kind="connect"}' in metrics


# --- channels -----------------------------------------------------------------------------------


async def test_subscribe_publish_and_sub_refresh_proxies(server: ServerProcess) -> None:
    """Per-namespace proxies: subscribe allowed (with info and data) or refused with the
    backend's code, publish rewritten by the backend, and sub_refresh ending a subscription."""
    app = server.create_app(name="px-channels")
    async with proxy_backend() as backend:
        backend.on("/connect", lambda body: ok({"user": "bob"}))

        def subscribe(body: Json) -> tuple[int, Json, float]:
            if body["channel"] == "room:no":
                return 200, {"error": {"code": 1103, "message": "closed room"}}, 0.0
            return ok(
                {"info": {"seat": 7}, "data": {"topic": "x"}, "expire_at": int(time.time()) + 1}
            )

        def publish(body: Json) -> tuple[int, Json, float]:
            return ok({"data": {"rewritten": body["data"], "by": body["user"]}})

        proxies = {
            "proxies": [
                {"name": "sub", "endpoint": backend.on("/subscribe", subscribe)},
                {"name": "pub", "endpoint": backend.on("/publish", publish)},
                {
                    "name": "subref",
                    "endpoint": backend.on("/sub_refresh", lambda body: ok({"expired": True})),
                },
            ],
            **connect_proxy(backend.url + "/connect"),
        }
        room = {
            "subscribe_proxy_enabled": True,
            "subscribe_proxy_name": "sub",
            "publish_proxy_enabled": True,
            "publish_proxy_name": "pub",
            "sub_refresh_proxy_enabled": True,
            "sub_refresh_proxy_name": "subref",
            "history_size": 10,
            "history_ttl": 60,
        }
        r = configure(server, app, proxies=proxies, namespaces={"room": room})
        assert r.status_code == 200, r.text

        ws, reply = await raw_connect(server, app)
        assert "connect" in reply, reply
        refused = await command(ws, 2, "subscribe", {"channel": "room:no"})
        assert refused["error"]["code"] == 1103
        allowed = await command(ws, 3, "subscribe", {"channel": "room:ok", "data": {"hi": 1}})
        assert allowed["subscribe"]["data"] == {"topic": "x"}
        assert not allowed["subscribe"].get("expires")  # the server refreshes, not the client
        assert backend.requests("/subscribe")[-1].body["data"] == {"hi": 1}
        published = await command(ws, 4, "publish", {"channel": "room:ok", "data": {"t": "a"}})
        assert "error" not in published, published
        history = engine_api(server, app, "history", {"channel": "room:ok", "limit": 10})
        (pub,) = history["result"]["publications"]
        assert pub["data"] == {"rewritten": {"t": "a"}, "by": "bob"}
        assert pub["info"]["chan_info"] == {"seat": 7}
        # Expired after a second: the sub_refresh proxy says it is over.
        await backend.wait_for("/sub_refresh")
        while True:
            pushes = [p["push"] for p in await messages(ws) if "unsubscribe" in p.get("push", {})]
            if pushes:
                assert pushes[0]["channel"] == "room:ok"
                assert pushes[0]["unsubscribe"]["code"] == 2501
                break
        await ws.close()


async def test_refresh_proxy_extends_then_ends_the_connection(server: ServerProcess) -> None:
    """With a refresh proxy the server asks the backend when the connection expires: the first
    answer extends it, the second (`expired`) closes it with 3005."""
    app = server.create_app(name="px-refresh")
    async with proxy_backend() as backend:
        answers = iter(
            [
                ok({"expire_at": int(time.time()) + 2}),
                ok({"expired": True}),
            ]
        )
        connect = backend.on(
            "/connect", lambda body: ok({"user": "r", "expire_at": int(time.time()) + 1})
        )
        refresh = backend.on("/refresh", lambda body: next(answers))
        proxies = connect_proxy(connect)
        proxies["client"]["proxy"]["refresh"] = {"enabled": True, "endpoint": refresh}
        assert configure(server, app, proxies=proxies).is_success
        ws, reply = await raw_connect(server, app)
        assert reply["connect"].get("expires") is None  # not the client's job
        assert await closed_with(ws) == 3005
        seen = backend.requests("/refresh")
        assert len(seen) == 2 and seen[0].body["user"] == "r"


# --- rpc and send -------------------------------------------------------------------------------


async def test_rpc_namespaces_from_client_and_server_api(server: ServerProcess) -> None:
    """`calc:sum` goes to namespace calc's proxy, from a client's `rpc` and from the server
    API's `rpc`; a method of no RPC namespace is 104; the backend's error is relayed."""
    app = server.create_app(name="px-rpc")
    async with proxy_backend() as backend:

        def calc(body: Json) -> tuple[int, Json, float]:
            if body["method"] == "calc:fail":
                return 200, {"error": {"code": 1500, "message": "cannot"}}, 0.0
            return ok({"data": {"sum": sum(body["data"]["n"]), "client": body.get("client", "")}})

        proxies = {
            "proxies": [{"name": "calc", "endpoint": backend.on("/calc", calc)}],
            "rpc": {"namespaces": [{"name": "calc", "proxy_enabled": True, "proxy_name": "calc"}]},
            **connect_proxy(backend.on("/connect", lambda body: ok({"user": "c"}))),
        }
        assert configure(server, app, proxies=proxies).is_success
        ws, _ = await raw_connect(server, app)
        reply = await command(ws, 2, "rpc", {"method": "calc:sum", "data": {"n": [1, 2, 3]}})
        assert reply["rpc"]["data"]["sum"] == 6 and reply["rpc"]["data"]["client"]
        assert (await command(ws, 3, "rpc", {"method": "other:x"}))["error"]["code"] == 104
        assert (await command(ws, 4, "rpc", {"method": "calc:fail"}))["error"]["code"] == 1500
        await ws.close()

        # Awaited: the backend answers from this test's event loop.
        async with httpx.AsyncClient(headers={"X-API-Key": str(app["api_key"])}) as http:
            url = f"{server.base_url}/realtime/api/rpc"
            api = await http.post(url, json={"method": "calc:sum", "params": {"n": [4, 5]}})
            assert api.json() == {"result": {"data": {"sum": 9, "client": ""}}}
            missing = await http.post(url, json={"method": "nope:x", "params": {}})
            assert missing.json()["error"]["code"] == 104


async def test_send_reaches_the_backend(server: ServerProcess) -> None:
    """A client's asynchronous `send` is POSTed to the app's send proxy."""
    app = server.create_app(name="px-send")
    async with proxy_backend() as backend:
        proxies = connect_proxy(backend.on("/connect", lambda body: ok({"user": "s"})))
        proxies["client"]["proxy"]["send"] = {
            "enabled": True,
            "endpoint": backend.on("/send", lambda body: ok({})),
        }
        assert configure(server, app, proxies=proxies).is_success
        ws, _ = await raw_connect(server, app)
        await ws.send(json.dumps({"send": {"data": {"note": "fire and forget"}}}))
        (seen,) = await backend.wait_for("/send")
        assert seen.body["data"] == {"note": "fire and forget"} and seen.body["user"] == "s"
        assert ws.close_code is None
        await ws.close()


async def test_protobuf_client_is_binary_to_every_proxy(server: ServerProcess) -> None:
    """A protobuf client (centrifuge-python `use_protobuf=True`) is reported as protocol
    "protobuf", encoding "binary", its bytes (not JSON) sent as `b64data`, as Centrifugo does;
    a reply's `b64data` reaches it as those bytes: the connect's data, the rpc's result, and a
    publication rewritten by the publish proxy, which reaches the subscriber byte for byte."""
    app = server.create_app(name="px-protobuf")
    sent = {"connect": b"\x00hello\xff", "subscribe": b"\x01sub", "publish": b"\x02pub\xfe"}
    sent |= {"rpc": b"\x03rpc", "send": b"\x04send\x80"}
    rewritten = b"\x00rewritten \xff\xfe bytes"

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    async with proxy_backend() as backend:
        backend.on("/connect", lambda body: ok({"user": "pb", "b64data": b64(b"\xfawelcome")}))
        backend.on("/subscribe", lambda body: ok({}))
        backend.on("/publish", lambda body: ok({"b64data": b64(rewritten)}))
        backend.on("/rpc", lambda body: ok({"b64data": b64(b"\xfbanswer")}))
        backend.on("/send", lambda body: ok({}))
        proxies = {
            "proxies": [
                {"name": name, "endpoint": f"{backend.url}/{name}"}
                for name in ("subscribe", "publish", "rpc")
            ],
            "client": {
                "proxy": {
                    name: {"enabled": True, "endpoint": f"{backend.url}/{name}"}
                    for name in ("connect", "send")
                }
            },
            "rpc": {"namespaces": [{"name": "", "proxy_enabled": True, "proxy_name": "rpc"}]},
        }
        room = {
            "subscribe_proxy_enabled": True,
            "subscribe_proxy_name": "subscribe",
            "publish_proxy_enabled": True,
            "publish_proxy_name": "publish",
        }
        r = configure(server, app, proxies=proxies, namespaces={"room": room})
        assert r.status_code == 200, r.text

        rec = Recorder()
        client = Client(
            f"{server.ws_url}?key={app['client_api_key']}",
            events=ClientEvents(rec),
            use_protobuf=True,
            data=sent["connect"],
        )
        await client.connect()
        try:
            await client.ready(10)
            connected = await rec.next("connected")
            assert connected.data == b"\xfawelcome"
            sub = client.new_subscription("room:pb", SubEvents(rec), data=sent["subscribe"])
            await sub.subscribe()
            await sub.ready(10)
            await sub.publish(sent["publish"])
            assert (await rec.next("publication")).pub.data == rewritten
            assert (await client.rpc("echo", sent["rpc"])).data == b"\xfbanswer"
        finally:
            await client.disconnect()
        # centrifuge-python has no `send`: a raw protobuf connection sends one.
        url = f"{server.ws_url}?key={app['client_api_key']}"
        async with websockets.connect(url, subprotocols=PROTOBUF) as ws:  # type: ignore[arg-type]
            connect = theirs.Command(id=1)
            connect.connect.data = sent["connect"]
            await ws.send(frame(connect))
            (reply,) = await next_replies(ws, timeout=10)
            assert reply.connect.data == b"\xfawelcome"
            send = theirs.Command()
            send.send.data = sent["send"]
            await ws.send(frame(send))
            await backend.wait_for("/send")
        for kind, data in sent.items():
            for seen in backend.requests(f"/{kind}"):
                body = seen.body
                assert (body["protocol"], body["encoding"]) == ("protobuf", "binary"), kind
                assert base64.b64decode(body["b64data"]) == data and "data" not in body, kind
        assert backend.requests("/rpc")[0].body["client"] == connected.client


# --- configuration ------------------------------------------------------------------------------


def test_configuration_is_validated_with_clear_errors(server: ServerProcess) -> None:
    app = server.create_app(name="px-validate")
    cases = [
        ({"proxies": [{"name": "a", "endpoint": "ftp://x"}]}, "endpoint"),
        ({"proxies": [{"name": "a", "endpoint": "http://x", "timeout": "forever"}]}, "timeout"),
        ({"proxies": [{"name": "a", "endpoint": "http://x", "http_headers": ["Host"]}]}, "Host"),
        ({"client": {"proxy": {"connect": {"enabled": True}}}}, "no endpoint"),
        ({"rpc": {"namespaces": [{"name": "c", "proxy_enabled": True}]}}, "'default'"),
        ({"bogus": 1}, "bogus"),
    ]
    for proxies, words in cases:
        r = configure(server, app, proxies=proxies)
        assert r.status_code == 400, (proxies, r.text)
        assert words in r.text, r.text
    r = configure(
        server,
        app,
        namespaces={"room": {"subscribe_proxy_enabled": True, "subscribe_proxy_name": "x"}},
    )
    assert r.status_code == 400 and "subscribe_proxy_name" in r.text
    good = {"proxies": [{"name": "x", "endpoint": "http://127.0.0.1:9/x"}]}
    r = configure(
        server,
        app,
        proxies=good,
        namespaces={"room": {"subscribe_proxy_enabled": True, "subscribe_proxy_name": "x"}},
    )
    assert r.status_code == 200, r.text
    shown = r.json()["application"]
    assert shown["proxies"]["proxies"][0]["endpoint"] == "http://127.0.0.1:9/x"
    assert shown["namespaces"]["room"]["subscribe_proxy_name"] == "x"
    # Removing the proxy a namespace still names is refused.
    assert configure(server, app, proxies={}).status_code == 400


# --- isolation and load -------------------------------------------------------------------------


def user_answer(user: str, body: Json) -> Any:
    """A connect proxy's answer naming `user`, whatever was asked."""
    return ok({"user": user})


async def test_tenant_isolation(server: ServerProcess) -> None:
    """App A's proxy receives only app A's traffic, though B's clients connect alongside."""
    app_a = server.create_app(name="px-a")
    app_b = server.create_app(name="px-b")
    async with proxy_backend() as backend:
        for app, path in ((app_a, "/a"), (app_b, "/b")):
            endpoint = backend.on(path, functools.partial(user_answer, path))
            assert configure(server, app, proxies=connect_proxy(endpoint)).is_success
        sockets = []
        for app in (app_a, app_b, app_a, app_b):
            ws, reply = await raw_connect(server, app)
            assert "connect" in reply
            sockets.append(ws)
        assert {s.body["app_id"] for s in backend.requests("/a")} == {app_a["app_id"]}
        assert {s.body["app_id"] for s in backend.requests("/b")} == {app_b["app_id"]}
        assert len(backend.requests("/a")) == len(backend.requests("/b")) == 2
        for ws in sockets:
            await ws.close()


async def test_slow_backend_does_not_delay_other_apps(server: ServerProcess) -> None:
    """100 clients connect through a proxy that answers in 2 s: the node's per-app bound lets
    50 wait and answers the rest 100 at once, and another app's clients connect meanwhile
    without delay."""
    slow_app = server.create_app(name="px-slow")
    fast_app = server.create_app(name="px-fast")
    async with proxy_backend() as backend:
        slow = backend.on("/slow", lambda body: ok({"user": "slow"}, delay=2.0))
        fast = backend.on("/fast", lambda body: ok({"user": "fast"}))
        assert configure(server, slow_app, proxies=connect_proxy(slow, timeout="5s")).is_success
        assert configure(server, fast_app, proxies=connect_proxy(fast)).is_success

        async def slow_client() -> tuple[Json, float]:
            ws, reply = await raw_connect(server, slow_app)
            answered = time.monotonic()
            await ws.close()
            return reply, answered

        slow_tasks = [asyncio.create_task(slow_client()) for _ in range(100)]
        await backend.wait_for("/slow", PER_APP)  # the slow backend holds its share now
        fast_latencies = []
        for _ in range(10):
            started = time.monotonic()
            ws, reply = await raw_connect(server, fast_app)
            fast_latencies.append(time.monotonic() - started)
            assert "connect" in reply, reply
            await ws.close()
        assert backend.in_flight > 0  # measured while the slow backend still held its calls
        results = await asyncio.gather(*slow_tasks)
        # Generous for a loaded 2-core machine; the slow backend alone takes 2 s.
        assert max(fast_latencies) < 1.5, fast_latencies
        connected = [t for r, t in results if "connect" in r]
        refused = [(r, t) for r, t in results if "error" in r]
        assert len(connected) + len(refused) == 100
        assert len(connected) <= PER_APP and backend.peak_in_flight <= PER_APP
        assert refused and all(r["error"]["code"] == 100 for r, _ in refused)
        # At once, not queued behind the slow ones: every refusal came before any answer.
        assert max(t for _, t in refused) < min(connected)
        metrics = httpx.get(f"{server.base_url}/metrics").text
        rejected = re.search(r'xshathra_proxy_rejected_total\{kind="connect"\} (\S+)', metrics)
        assert rejected is not None and float(rejected.group(1)) >= len(refused)


# --- centrifuge-js ------------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "centrifuge").exists(),
    reason="Node or the npm packages are missing (make test installs them)",
)
async def test_centrifuge_js_through_every_proxy(server: ServerProcess) -> None:
    """centrifuge-js with no token: connect proxy, subscribe proxy, publish rewritten by the
    publish proxy, an RPC round trip and a `send` that reaches the backend."""
    app = server.create_app(name="px-js")
    async with proxy_backend() as backend:
        upper = backend.on("/publish", lambda b: ok({"data": {"t": b["data"]["t"].upper()}}))
        proxies: Json = {
            "proxies": [
                {"name": "default", "endpoint": backend.on("/subscribe", lambda b: ok({}))},
                {"name": "pub", "endpoint": upper},
                {"name": "rpc", "endpoint": backend.on("/rpc", lambda b: ok({"data": b["data"]}))},
            ],
            "rpc": {"namespaces": [{"name": "", "proxy_enabled": True, "proxy_name": "rpc"}]},
            **connect_proxy(
                backend.on("/connect", lambda b: ok({"user": b["data"]["me"], "data": {"hi": 1}}))
            ),
        }
        proxies["client"]["proxy"]["send"] = {
            "enabled": True,
            "endpoint": backend.on("/send", lambda b: ok({})),
        }
        room = {
            "subscribe_proxy_enabled": True,  # the proxy named "default"
            "publish_proxy_enabled": True,
            "publish_proxy_name": "pub",
            "history_size": 10,
            "history_ttl": 60,
        }
        r = configure(server, app, proxies=proxies, namespaces={"room": room})
        assert r.status_code == 200, r.text
        env = {
            "XS_NO_TOKEN": "1",
            "XS_CONNECT_DATA": json.dumps({"me": "js-proxied"}),
            "XS_WS": f"{server.ws_url}?key={app['client_api_key']}",
            "XS_CHANNEL": "room:js",
        }
        async with start_js(server, app, **env) as client:
            assert (await client.next("connected"))["data"] == {"hi": 1}
            await client.next("subscribed")
            await client.send("publish", data={"t": "shout"})
            assert (await client.next("publication"))["data"] == {"t": "SHOUT"}
            await client.send("rpc", method="echo", data={"n": 42})
            assert (await client.next("rpc"))["data"] == {"n": 42}
            await client.send("send", data={"note": "async"})
            (seen,) = await backend.wait_for("/send")
            assert seen.body["data"] == {"note": "async"} and seen.body["user"] == "js-proxied"
