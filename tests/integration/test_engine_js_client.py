"""The engine driven by the unmodified centrifuge-js client (npm `centrifuge`) under Node with
the `ws` package: connect, subscribe, publications with tags, presence, history, recovery after
reconnect and after a lost network, token refresh through getToken, private channels,
server-side subscriptions, client publish and server disconnects.

`tests/js/scenario.mjs` runs one client: configured by environment variables, it prints each
client event as a JSON line and takes commands as JSON lines on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.clients import TcpProxy, engine_api
from tests.support.server import ServerProcess, running_server

JS_DIR = Path(__file__).resolve().parents[1] / "js"
Json = dict[str, Any]
EXPIRED_CLOSE_DELAY = 2

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "centrifuge").exists(),
    reason="Node or the npm packages are missing (make test installs them)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One node for the module; it closes an expired connection two seconds after `exp`, so
    the refresh test proves the refresh against a deadline the server enforces."""
    env = {"XSHATHRA_EXPIRED_CLOSE_DELAY": str(EXPIRED_CLOSE_DELAY)}
    with running_server(tmp_path_factory.mktemp("node"), env=env) as proc:
        yield proc


class JsClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[Json] = []  # every event read so far, matched or skipped

    async def next(
        self, event: str, where: Callable[[Json], bool] = lambda _: True, timeout: float = 10
    ) -> Json:
        """The next event of this kind that matches; others are skipped (and logged)."""

        async def find() -> Json:
            assert self.proc.stdout is not None
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"node exited before '{event}': {self.log}")
                msg: Json = json.loads(line)
                self.log.append(msg)
                if msg["event"] == event and where(msg):
                    return msg

        try:
            return await asyncio.wait_for(find(), timeout)
        except TimeoutError:
            raise AssertionError(f"no '{event}' within {timeout} s; events: {self.log}") from None

    def seen(self, *events: str) -> list[Json]:
        return [m for m in self.log if m["event"] in events]

    async def send(self, cmd: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.proc.stdin.drain()


def lost(msg: Json) -> bool:
    """A connecting/subscribing event other than the one connect()/subscribe() emits (code 0)."""
    return bool(msg["code"] != 0)


@contextlib.asynccontextmanager
async def start_js(server: ServerProcess, app: Json, **env: str) -> AsyncIterator[JsClient]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(JS_DIR / "scenario.mjs"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "XS_BASE": server.base_url, "XS_API_KEY": str(app["api_key"]), **env},
        cwd=JS_DIR,
    )
    try:
        yield JsClient(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def signing_env(app: Json, **env: str) -> dict[str, str]:
    """Tokens signed by the app's backend with its app_secret."""
    return {"XS_APP_ID": str(app["app_id"]), "XS_APP_SECRET": str(app["app_secret"]), **env}


async def test_publication_presence_and_history(server: ServerProcess) -> None:
    app = server.create_app(name="js")
    async with start_js(server, app) as client:
        await client.next("connected")
        assert (await client.next("subscribed"))["recoverable"] is True
        engine_api(
            server,
            app,
            "publish",
            {"channel": "public:js", "data": {"text": "hi"}, "tags": {"event": "greet"}},
        )
        pub = await client.next("publication")
        assert pub["data"] == {"text": "hi"} and pub["tags"] == {"event": "greet"}
        assert pub["offset"] == 1
        await client.send("presence")
        assert (await client.next("presence"))["users"] == ["js-user"]
        await client.send("presence_stats")
        stats = await client.next("presence_stats")
        assert (stats["clients"], stats["users"]) == (1, 1)
        engine_api(server, app, "publish", {"channel": "public:js", "data": {"text": "2nd"}})
        await client.next("publication")
        await client.send("history", limit=1)
        history = await client.next("history")
        assert history["data"] == [{"text": "hi"}] and history["offsets"] == [1]
        assert history["offset"] == 2
        await client.send("history", limit=10, reverse=True)
        assert (await client.next("history"))["data"] == [{"text": "2nd"}, {"text": "hi"}]


async def test_broadcast_event_reaches_js(server: ServerProcess) -> None:
    """POST /api/broadcast: ctx.data is the data, ctx.tags.event the event name."""
    app = server.create_app(name="js-bc")
    async with start_js(server, app) as client:
        await client.next("subscribed")
        r = httpx.post(
            f"{server.base_url}/api/broadcast",
            headers={"X-API-Key": str(app["api_key"])},
            json={"room": "public:js", "event": "order-paid", "data": {"id": 7}},
        )
        assert r.status_code == 200, r.text
        pub = await client.next("publication")
        assert pub["data"] == {"id": 7} and pub["tags"] == {"event": "order-paid"}


async def test_recovery_after_reconnect(server: ServerProcess) -> None:
    app = server.create_app(name="js-recover")
    async with start_js(server, app) as client:
        await client.next("subscribed")
        engine_api(server, app, "publish", {"channel": "public:js", "data": 0})
        await client.next("publication")
        await client.send("disconnect")
        await client.next("disconnected")
        for i in (1, 2, 3):
            engine_api(server, app, "publish", {"channel": "public:js", "data": i})
        await client.send("connect")
        sub = await client.next("subscribed")
        assert sub["wasRecovering"] is True and sub["recovered"] is True
        assert [(await client.next("publication"))["data"] for _ in range(3)] == [1, 2, 3]


async def test_recovery_after_network_loss(server: ServerProcess) -> None:
    """The link dies under the client (no close frame): it reconnects by itself and gets what
    was published while it was away."""
    app = server.create_app(name="js-recover-net")
    async with TcpProxy(server.port) as proxy, start_js(server, app, XS_WS=proxy.ws_url) as client:
        await client.next("subscribed")
        engine_api(server, app, "publish", {"channel": "public:js", "data": 0})
        await client.next("publication")
        proxy.hold()  # the reconnect waits at the proxy until the gap exists
        proxy.drop()
        await client.next("connecting", lost)
        for i in (1, 2, 3):
            engine_api(server, app, "publish", {"channel": "public:js", "data": i})
        proxy.release()
        sub = await client.next("subscribed")
        assert sub["wasRecovering"] is True and sub["recovered"] is True
        got = [await client.next("publication") for _ in range(3)]
        assert [(p["data"], p["offset"]) for p in got] == [(1, 2), (2, 3), (3, 4)]


async def test_tokens_are_refreshed_through_get_token(server: ServerProcess) -> None:
    """3-second connection and subscription tokens, signed by the app's backend: getToken
    is called again and again, and neither the connection nor the subscription is ever closed,
    well past the first tokens' deadline (exp + close delay)."""
    app = server.create_app(name="js-refresh")
    env = signing_env(app, XS_TTL="3", XS_SUB_TTL="3", XS_SUB_TOKEN="1", XS_CHANNEL="private-js")
    async with start_js(server, app, **env) as client:
        await client.next("subscribed")
        # Call 1 connects, call 2 refreshes at ~3 s, call 3 at ~6 s (first deadline: ~5 s).
        await client.next("token", lambda m: m["calls"] >= 3, timeout=15)
        await client.next("sub_token", lambda m: m["calls"] >= 3, timeout=5)
        assert [m for m in client.seen("connecting", "subscribing") if lost(m)] == []
        assert client.seen("disconnected", "unsubscribed", "client_error", "sub_error") == []
        engine_api(server, app, "publish", {"channel": "private-js", "data": "still here"})
        assert (await client.next("publication"))["data"] == "still here"


async def test_private_channel_needs_a_subscription_token(server: ServerProcess) -> None:
    app = server.create_app(name="js-private")
    async with start_js(server, app, XS_CHANNEL="secret-room") as refused:
        assert (await refused.next("unsubscribed"))["code"] == 103
    async with start_js(server, app, XS_CHANNEL="secret-room", XS_SUB_TOKEN="1") as allowed:
        await allowed.next("subscribed")
        assert [m["channel"] for m in allowed.seen("sub_token")] == ["secret-room"]
        engine_api(server, app, "publish", {"channel": "secret-room", "data": {"s": 1}})
        assert (await allowed.next("publication"))["data"] == {"s": 1}


async def test_server_side_subscription_from_the_token(server: ServerProcess) -> None:
    app = server.create_app(name="js-server-sub")
    env = {"XS_CHANNELS": "news,public:feed", "XS_NO_SUBSCRIBE": "1"}
    async with start_js(server, app, **env) as client:
        first = await client.next("server_subscribed")
        second = await client.next("server_subscribed")
        assert {first["channel"], second["channel"]} == {"news", "public:feed"}
        engine_api(server, app, "publish", {"channel": "public:feed", "data": "f"})
        pub = await client.next("server_publication")
        assert (pub["channel"], pub["data"], pub["offset"]) == ("public:feed", "f", 1)


async def test_client_publish(server: ServerProcess) -> None:
    """Refused on `public:` (103); allowed in a namespace with allow_publish_for_subscriber."""
    app = server.create_app(name="js-publish")
    r = httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={
            "namespaces": {
                "chat": {"allow_subscribe_for_client": True, "allow_publish_for_subscriber": True}
            }
        },
    )
    assert r.status_code == 200, r.text
    async with start_js(server, app) as public:
        await public.next("subscribed")
        await public.send("publish", data={"no": 1})
        assert (await public.next("command_error"))["code"] == 103
    async with start_js(server, app, XS_CHANNEL="chat:js") as chat:
        await chat.next("subscribed")
        await chat.send("publish", data={"text": "from js"})
        pub = await chat.next("publication")  # may come before or after the publish reply
        if not chat.seen("published"):
            await chat.next("published")
        assert pub["data"] == {"text": "from js"} and pub["user"] == "js-user"


async def test_server_disconnect_without_reconnect(server: ServerProcess) -> None:
    app = server.create_app(name="js-kick")
    async with start_js(server, app) as client:
        await client.next("subscribed")
        engine_api(
            server,
            app,
            "disconnect",
            {"user": "js-user", "disconnect": {"code": 3503, "reason": "x"}},
        )
        gone = await client.next("disconnected")
        assert (gone["code"], gone["reason"]) == (3503, "x")
        await client.send("state")
        assert (await client.next("state"))["client"] == "disconnected"
        assert [m for m in client.seen("connecting") if lost(m)] == []


async def test_join_and_leave_between_two_js_clients(server: ServerProcess) -> None:
    app = server.create_app(name="js-jl")
    async with start_js(server, app, XS_USER="first") as first:
        await first.next("subscribed")
        async with start_js(server, app, XS_USER="second") as second:
            await second.next("subscribed")
            assert (await first.next("join", lambda m: m["user"] == "second"))["user"] == "second"
            await second.send("exit")
            await first.next("leave", lambda m: m["user"] == "second")
