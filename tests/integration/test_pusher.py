"""The Pusher protocol (SPEC §10) against a real server: unmodified pusher-js under Node
(`tests/js/pusher.mjs`) and the `pusher` PyPI library. Public, private and presence channels,
client events, the HTTP API (events, batch, channels, users, terminate), cross-protocol
delivery with centrifuge-python on the same channels, bad signatures and malformed frames."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pusher
import pytest
import websockets
from pusher.errors import PusherBadAuth, PusherForbidden
from websockets.exceptions import ConnectionClosed

from tests.integration.test_engine_js_client import JsClient
from tests.support.clients import Recorder, engine_api, make_client, realtime_token
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, running_server
from tests.support.services import REDIS_HOST, REDIS_PORT, ensure_service, postgres_database

JS_DIR = Path(__file__).resolve().parents[1] / "js"
Json = dict[str, Any]
SIGNIN_TIMEOUT = 2.0  # seconds (Pusher's 30), for apps that require sign-in

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "pusher-js").exists(),
    reason="Node or the npm packages are missing (make test installs them)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"XSHATHRA_PUSHER_SIGNIN_TIMEOUT": str(SIGNIN_TIMEOUT)}
    with running_server(tmp_path_factory.mktemp("pusher"), env=env) as proc:
        yield proc


def new_app(server: ServerProcess, **settings: Any) -> Json:
    """A numeric app id, as some Pusher libraries require; settings applied by the admin."""
    app = server.create_app(name="pusher", app_id=str(int(time.time() * 1e6) % 10**12))
    if settings:
        r = httpx.put(
            f"{server.base_url}/api/applications/{app['app_id']}",
            json=settings,
            headers=server.admin_headers(),
        )
        assert r.status_code == 200, r.text
        app = {**app, **r.json()["application"]}  # the settings as stored, keys kept
    return app


def lib(server: ServerProcess, app: Json, *, secret: str | None = None) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=str(app["app_id"]),
        key=str(app["client_api_key"]),
        secret=secret or str(app["app_secret"]),
        host="127.0.0.1",
        port=server.port,
        ssl=False,
    )


@contextlib.asynccontextmanager
async def start_pusher_js(
    server: ServerProcess,
    app: Json,
    *,
    user: str = "js-user",
    secret: str | None = None,
    master_key: str = "",
) -> AsyncIterator[JsClient]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(JS_DIR / "pusher.mjs"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "XS_PORT": str(server.port),
            "XS_KEY": str(app["client_api_key"]),
            "XS_SECRET": secret or str(app["app_secret"]),
            "XS_USER": user,
            "XS_MASTER_KEY": master_key,
        },
        cwd=JS_DIR,
    )
    try:
        yield JsClient(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def subscribed(client: JsClient, channel: str) -> Json:
    await client.send("subscribe", channel=channel)
    return await client.next("subscribed", lambda e: e["channel"] == channel)


# --- WebSocket: connection, public channels, HTTP events ------------------------------------


async def test_public_channel_gets_http_events(server: ServerProcess) -> None:
    """connection_established gives a Pusher socket_id; events of the pusher library arrive
    with their data as sent, on one channel or several."""
    app = new_app(server)
    async with start_pusher_js(server, app) as js:
        connected = await js.next("connected")
        assert re.fullmatch(r"\d+\.\d+", connected["socket_id"])
        await subscribed(js, "my-channel")
        api = lib(server, app)
        assert await asyncio.to_thread(api.trigger, "my-channel", "my-event", {"n": 1}) == {}
        got = await js.next("message")
        assert (got["channel"], got["name"], got["data"]) == ("my-channel", "my-event", {"n": 1})
        await asyncio.to_thread(api.trigger, ["other", "my-channel"], "text", "plain words")
        got = await js.next("message")
        assert (got["name"], got["data"]) == ("text", "plain words")


async def test_socket_id_excludes_the_sender(server: ServerProcess) -> None:
    app = new_app(server)
    async with start_pusher_js(server, app) as a, start_pusher_js(server, app) as b:
        a_id = (await a.next("connected"))["socket_id"]
        await b.next("connected")
        await subscribed(a, "room")
        await subscribed(b, "room")
        api = lib(server, app)
        await asyncio.to_thread(api.trigger, "room", "first", {"n": 1}, a_id)
        assert (await b.next("message"))["name"] == "first"
        await asyncio.to_thread(api.trigger, "room", "second", {"n": 2})
        # Events arrive in order: the first `a` sees is the second one.
        assert (await a.next("message"))["name"] == "second"


# --- private, presence, client events, sign-in --------------------------------------------------


async def test_private_channel_needs_the_apps_signature(server: ServerProcess) -> None:
    app = new_app(server)
    async with (
        start_pusher_js(server, app) as good,
        start_pusher_js(server, app, secret="not-the-secret") as bad,
    ):
        await subscribed(good, "private-orders")
        await bad.send("subscribe", channel="private-orders")
        error = await bad.next("sub_error")
        assert (error["type"], error["status"]) == ("AuthError", 401)
        await asyncio.to_thread(lib(server, app).trigger, "private-orders", "paid", {"id": 7})
        assert (await good.next("message"))["data"] == {"id": 7}
        await bad.send("subscribe", channel="my-public")  # the connection is still usable
        await bad.next("subscribed", lambda e: e["channel"] == "my-public")


async def test_namespaced_channels_follow_their_namespace(server: ServerProcess) -> None:
    """A Centrifuge namespace that asks a subscription token asks Pusher clients for the app's
    signature (pusher-js sends none for such a name); `public:` lets anyone in."""
    app = new_app(server)
    async with start_pusher_js(server, app) as js:
        await subscribed(js, "public:lobby")
        await js.send("subscribe", channel="user:42")
        error = await js.next("sub_error")
        assert (error["channel"], error["status"]) == ("user:42", 401)


async def test_presence_members_users_and_counts(server: ServerProcess) -> None:
    app = new_app(server)
    api = lib(server, app)
    async with start_pusher_js(server, app, user="ann") as ann:
        first = await subscribed(ann, "presence-team")
        assert first["members"] == {"count": 1, "ids": ["ann"]}
        async with start_pusher_js(server, app, user="bob") as bob:
            second = await subscribed(bob, "presence-team")
            assert second["members"]["count"] == 2
            assert sorted(second["members"]["ids"]) == ["ann", "bob"]
            added = await ann.next("member_added")
            assert added["id"] == "bob" and added["info"] == {"name": "name-bob"}
            users = await asyncio.to_thread(api.users_info, "presence-team")
            assert sorted(u["id"] for u in users["users"]) == ["ann", "bob"]
            info = await asyncio.to_thread(
                api.channel_info, "presence-team", ["user_count", "subscription_count"]
            )
            assert info == {"occupied": True, "user_count": 2, "subscription_count": 2}
            listed = await asyncio.to_thread(api.channels_info, "presence-", ["user_count"])
            assert listed == {"channels": {"presence-team": {"user_count": 2}}}
            await bob.send("exit")
            assert (await ann.next("member_removed"))["id"] == "bob"
        assert [e["id"] for e in ann.seen("member_added")] == ["bob"]  # never itself


async def test_client_events_only_where_the_app_allows_them(server: ServerProcess) -> None:
    closed = new_app(server)
    async with start_pusher_js(server, closed) as js:
        await subscribed(js, "private-chat")
        await js.send("trigger", channel="private-chat", name="client-typing", data={"x": 1})
        error = await js.next("conn_error")
        assert "not enabled" in error["message"]

    app = new_app(server, pusher_client_events=True)
    async with (
        start_pusher_js(server, app, user="ann") as ann,
        start_pusher_js(server, app, user="bob") as bob,
    ):
        await subscribed(ann, "presence-chat")
        await subscribed(bob, "presence-chat")
        await ann.send("trigger", channel="presence-chat", name="client-typing", data={"x": 1})
        got = await bob.next("message")
        assert (got["name"], got["data"]) == ("client-typing", {"x": 1})
        # Rate-limited as Pusher does: 10 per second per connection, then 4301.
        for i in range(25):
            await ann.send("trigger", channel="presence-chat", name="client-burst", data={"i": i})
        error = await ann.next("conn_error", lambda e: e["code"] == 4301)
        assert "rate" in error["message"].lower() or "per second" in error["message"]
        await bob.next("message", lambda e: e["name"] == "client-burst")
        # The sender never gets its own client events back.
        assert not [e for e in ann.seen("message") if e["name"].startswith("client-")]


async def test_signin_and_terminate_connections(server: ServerProcess) -> None:
    app = new_app(server)
    async with start_pusher_js(server, app, user="carol") as js:
        await js.next("connected")
        await js.send("signin")
        success = await js.next("signin_success")
        assert json.loads(success["data"]["user_data"]) == {"id": "carol"}
        # pusher-js subscribes to the user's own channel itself after signing in.
        await js.next("user_channel_subscribed")
        await asyncio.to_thread(lib(server, app).send_to_user, "carol", "note", {"hi": 1})
        note = await js.next("user_message")
        assert (note["name"], note["data"]) == ("note", {"hi": 1})
        await asyncio.to_thread(lib(server, app).terminate_user_connections, "carol")
        error = await js.next("conn_error", lambda e: e["code"] == 4009)
        assert error["code"] == 4009
        await js.next("state", lambda e: e["current"] in ("disconnected", "failed"))


async def test_apps_requiring_sign_in_close_connections_that_do_not(
    server: ServerProcess,
) -> None:
    """With `pusher_user_authentication`, a connection that has not sent `pusher:signin` within
    the sign-in timeout is closed with 4009; one that signed in stays."""
    app = new_app(server, pusher_user_authentication=True)
    assert app["pusher_user_authentication"] is True
    async with (
        start_pusher_js(server, app, user="dana") as signed_in,
        start_pusher_js(server, app, user="eve") as silent,
    ):
        await signed_in.next("connected")
        await signed_in.send("signin")
        await signed_in.next("signin_success")
        await subscribed(signed_in, "news")
        # The silent client connects after the signed-in one: its deadline is the later one.
        await silent.next("connected")
        opened = time.monotonic()
        error = await silent.next("conn_error", lambda e: e["code"] == 4009, timeout=30)
        assert time.monotonic() - opened >= SIGNIN_TIMEOUT - 0.5
        assert "not authorized within timeout" in error["message"]
        await silent.next("state", lambda e: e["current"] in ("disconnected", "failed"))
        await asyncio.to_thread(lib(server, app).trigger, "news", "still-here", {"ok": 1})
        assert (await signed_in.next("message"))["name"] == "still-here"
        assert not signed_in.seen("conn_error")
    # Off by default: the other tests' connections never sign in and live on.
    assert new_app(server)["pusher_user_authentication"] is False


async def test_subscription_counts_reach_subscribers_when_the_app_counts(
    server: ServerProcess,
) -> None:
    """With `pusher_subscription_count`, every subscriber of a non-presence channel gets
    `pusher:subscription_count` as the count changes (Centrifuge subscribers count too);
    presence channels and apps without the setting get none."""
    app = new_app(server, pusher_subscription_count=True)
    assert app["pusher_subscription_count"] is True
    rec = Recorder()
    client = make_client(server, rec, token=realtime_token(server, app, "py", channels=["tally"]))
    async with start_pusher_js(server, app, user="a") as a, start_pusher_js(server, app) as b:
        await subscribed(a, "tally")
        first = await a.next("subscription_count")
        assert (first["channel"], first["count"], first["kept"]) == ("tally", 1, 1)
        await subscribed(b, "tally")
        assert (await a.next("subscription_count"))["count"] == 2
        assert (await b.next("subscription_count"))["count"] == 2
        await client.connect()
        await rec.next("server_subscribed")
        assert (await a.next("subscription_count"))["count"] == 3
        await client.disconnect()
        assert (await a.next("subscription_count"))["count"] == 2
        await b.send("unsubscribe", channel="tally")
        assert (await a.next("subscription_count"))["count"] == 1
        # Presence channels have members, not counts.
        await subscribed(a, "presence-tally")
        await asyncio.to_thread(lib(server, app).trigger, "presence-tally", "mark", {})
        await a.next("message", lambda e: e["name"] == "mark")
        assert [e["channel"] for e in a.seen("subscription_count")] == ["tally"] * 5
    plain = new_app(server)
    async with start_pusher_js(server, plain) as c, start_pusher_js(server, plain) as d:
        await subscribed(c, "tally")
        await subscribed(d, "tally")
        await asyncio.to_thread(lib(server, plain).trigger, "tally", "mark", {})
        await c.next("message", lambda e: e["name"] == "mark")
        assert not c.seen("subscription_count")


async def test_subscription_counts_are_throttled_past_100_subscribers(
    server: ServerProcess,
) -> None:
    """As Pusher: every change is told while a channel has at most 100 subscribers; past
    that, at most one count per 5 s, the latest one (20 joins give a handful, not 20)."""
    app = new_app(server, pusher_subscription_count=True)
    url = f"ws://127.0.0.1:{server.port}/app/{app['client_api_key']}?protocol=7"

    async def join(ws: Any) -> None:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["event"] == (
            "pusher:connection_established"
        )
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "crowd"}}))

    async with start_pusher_js(server, app) as watcher, contextlib.AsyncExitStack() as stack:
        await subscribed(watcher, "crowd")
        sockets = [await stack.enter_async_context(websockets.connect(url)) for _ in range(119)]
        for ws in sockets[:99]:
            await join(ws)
        await watcher.next("subscription_count", lambda e: e["count"] == 100, timeout=30)
        assert [e["count"] for e in watcher.seen("subscription_count")] == list(range(1, 101))
        for ws in sockets[99:]:
            await join(ws)
        await watcher.next("subscription_count", lambda e: e["count"] == 120, timeout=30)
        past = [e["count"] for e in watcher.seen("subscription_count")][100:]
        assert past[0] == 101 and past[-1] == 120 and past == sorted(past)
        assert len(past) <= 5, past


async def test_cache_channels_give_new_subscribers_the_last_event(server: ServerProcess) -> None:
    """A `cache-` channel's new subscriber first gets the last event triggered on it; with none,
    `pusher:cache_miss` and a signed `cache_miss` webhook. Private cache channels too."""
    app = new_app(server)
    api = lib(server, app)
    with Receiver().running() as receiver:
        r = httpx.post(
            f"{server.base_url}/api/webhooks",
            headers={"X-API-Key": str(app["api_key"])},
            json={"url": receiver.url, "events": ["cache_miss"]},
        )
        assert r.status_code == 201, r.text
        async with start_pusher_js(server, app) as first:
            await subscribed(first, "cache-score")
            assert (await first.next("cache_miss"))["channel"] == "cache-score"
            (hook,) = await asyncio.to_thread(receiver.wait_for, 1, 20.0)
            headers = {k.lower(): v for k, v in hook.headers.items()}
            checked = api.validate_webhook(
                headers["x-pusher-key"], headers["x-pusher-signature"], hook.body.decode()
            )
            assert checked is not None
            assert checked["events"] == [{"name": "cache_miss", "channel": "cache-score"}]
            await asyncio.to_thread(api.trigger, "cache-score", "goal", {"n": 1})
            await asyncio.to_thread(api.trigger, "cache-score", "goal", {"n": 2})
            await asyncio.to_thread(api.trigger, "private-cache-door", "opened", "by ann")
            assert (await first.next("message"))["data"] == {"n": 1}
            assert (await first.next("message"))["data"] == {"n": 2}
            async with start_pusher_js(server, app) as later:
                await subscribed(later, "cache-score")
                got = await later.next("message")
                assert (got["channel"], got["name"], got["data"]) == (
                    "cache-score",
                    "goal",
                    {"n": 2},
                )
                await subscribed(later, "private-cache-door")
                got = await later.next("message", lambda e: e["channel"] == "private-cache-door")
                assert (got["name"], got["data"]) == ("opened", "by ann")
                # A live event follows the cached one, and neither comes twice.
                await asyncio.to_thread(api.trigger, "cache-score", "goal", {"n": 3})
                assert (await later.next("message", lambda e: e["name"] == "goal"))["data"] == {
                    "n": 3
                }
                assert not later.seen("cache_miss")
                assert [e["data"] for e in later.seen("message") if e["name"] == "goal"] == [
                    {"n": 2},
                    {"n": 3},
                ]
        assert len(receiver.requests) == 1  # the later subscribers found their events


async def test_encrypted_channel_relays_ciphertext(server: ServerProcess) -> None:
    """The server only relays: pusher-js decrypts what the pusher library encrypted, and a
    Centrifuge subscriber of the same channel sees nothing but nonce and ciphertext."""
    app = new_app(server)
    master = base64.b64encode(secrets.token_bytes(32)).decode()
    channel = "private-encrypted-vault"
    rec = Recorder()
    client = make_client(server, rec, token=realtime_token(server, app, "py", channels=[channel]))
    await client.connect()
    try:
        await rec.next("server_subscribed")
        async with start_pusher_js(server, app, master_key=master) as js:
            await subscribed(js, channel)
            api = pusher.Pusher(
                app_id=str(app["app_id"]),
                key=str(app["client_api_key"]),
                secret=str(app["app_secret"]),
                host="127.0.0.1",
                port=server.port,
                ssl=False,
                encryption_master_key_base64=master,
            )
            await asyncio.to_thread(api.trigger, channel, "secret", {"pin": 1234})
            got = await js.next("message")
            assert (got["name"], got["data"]) == ("secret", {"pin": 1234})
            seen = (await rec.next("server_publication")).pub.data
            assert set(seen) == {"nonce", "ciphertext"} and "1234" not in json.dumps(seen)
    finally:
        await client.disconnect()


# --- cross-protocol ----------------------------------------------------------------------------


async def test_pusher_and_centrifuge_clients_share_channels(server: ServerProcess) -> None:
    """A Pusher event reaches a centrifuge-python subscriber with tags.event; a Centrifuge
    publication with tags.event reaches Pusher as that event, one without as `publication`;
    subscriber counts count both kinds."""
    app = new_app(server, pusher_client_events=True)
    rec = Recorder()
    token = realtime_token(server, app, "py-user", channels=["private-mixed"])
    client = make_client(server, rec, token=token)
    await client.connect()
    try:
        await rec.next("server_subscribed")
        async with start_pusher_js(server, app, user="js") as js:
            await subscribed(js, "private-mixed")
            api = lib(server, app)
            await asyncio.to_thread(api.trigger, "private-mixed", "from-pusher", {"a": 1})
            pub = (await rec.next("server_publication")).pub
            assert pub.data == {"a": 1} and pub.tags == {"event": "from-pusher"}
            engine_api(
                server,
                app,
                "publish",
                {"channel": "private-mixed", "data": {"b": 2}, "tags": {"event": "from-cf"}},
            )
            assert (await js.next("message"))["name"] == "from-pusher"
            got = await js.next("message")
            assert (got["name"], got["data"]) == ("from-cf", {"b": 2})
            engine_api(server, app, "publish", {"channel": "private-mixed", "data": [3]})
            got = await js.next("message")
            assert (got["name"], got["data"]) == ("publication", [3])
            r = httpx.post(
                f"{server.base_url}/api/broadcast",
                json={"room": "private-mixed", "event": "seed", "data": {"c": 3}},
                headers={"X-API-Key": str(app["api_key"])},
            )
            assert r.status_code == 200, r.text
            assert r.json()["subscriber_count"] == 2
            assert (await js.next("message"))["name"] == "seed"
            await js.send("trigger", channel="private-mixed", name="client-hi", data={"d": 4})
            ctx = await rec.next(
                "server_publication", lambda c: c.pub.tags.get("event") == "client-hi"
            )
            assert ctx.pub.data == {"d": 4}
            assert re.fullmatch(r"\d+\.\d+", ctx.pub.info.client)  # the Pusher socket_id
            info = await asyncio.to_thread(
                api.channel_info, "private-mixed", ["subscription_count"]
            )
            assert info == {"occupied": True, "subscription_count": 2}
    finally:
        await client.disconnect()


# --- bad input ----------------------------------------------------------------------------------


def signed(
    app: Json, method: str, path: str, body: bytes = b"", **overrides: str
) -> dict[str, str]:
    params = {
        "auth_key": str(app["client_api_key"]),
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
    }
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    params.update({k: v for k, v in overrides.items() if k != "auth_signature"})
    text = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    params["auth_signature"] = overrides.get(
        "auth_signature",
        hmac.new(
            str(app["app_secret"]).encode(), f"{method}\n{path}\n{text}".encode(), hashlib.sha256
        ).hexdigest(),
    )
    return params


def test_http_api_refuses_bad_stale_and_replayed_signatures(server: ServerProcess) -> None:
    app = new_app(server)
    path = f"/apps/{app['app_id']}/events"
    body = json.dumps({"name": "e", "channels": ["c"], "data": "{}"}).encode()
    url = server.base_url + path

    def post(params: dict[str, str], content: bytes = body) -> httpx.Response:
        return httpx.post(url, params=params, content=content)

    good = signed(app, "POST", path, body)
    assert post(good).status_code == 200
    replay = post(good)
    assert replay.status_code == 401 and "Replayed" in replay.text
    stale = post(signed(app, "POST", path, body, auth_timestamp=str(int(time.time()) - 700)))
    assert stale.status_code == 401 and "Timestamp expired" in stale.text
    wrong = post(signed(app, "POST", path, body, auth_signature="0" * 64))
    assert wrong.status_code == 401 and wrong.text.strip() == "Invalid signature"
    tampered = post(signed(app, "POST", path, body), content=body.replace(b'"e"', b'"f"'))
    assert tampered.status_code == 401 and "body_md5" in tampered.text
    other = dict(signed(app, "POST", path, body), auth_key="xc_not_a_key")
    assert post(other).status_code == 401
    assert str(app["app_secret"]) not in replay.text + stale.text + wrong.text
    bad_json = b"{not json"
    assert post(signed(app, "POST", path, bad_json), bad_json).status_code == 400
    many = json.dumps({"name": "e", "channels": [f"c{i}" for i in range(101)], "data": ""})
    r = post(signed(app, "POST", path, many.encode()), many.encode())
    assert r.status_code == 400 and "100" in r.text
    with pytest.raises(PusherBadAuth):
        lib(server, app, secret="wrong").trigger("c", "e", {})


async def test_malformed_frames_and_refused_connections(server: ServerProcess) -> None:
    app = new_app(server)
    base = f"ws://127.0.0.1:{server.port}/app/"
    for url, code in (
        (base + "xc_unknown?protocol=7", 4001),
        (base + f"{app['client_api_key']}", 4008),
        (base + f"{app['client_api_key']}?protocol=99", 4007),
    ):
        async with websockets.connect(url) as ws:
            error = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert error["event"] == "pusher:error" and error["data"]["code"] == code
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == code

    async with websockets.connect(base + f"{app['client_api_key']}?protocol=7") as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["event"] == "pusher:connection_established"
        assert json.loads(hello["data"])["activity_timeout"] == 120
        for frame in ("not json", "[]", '{"event": 5}', '{"event":"pusher:subscribe","data":1}'):
            await ws.send(frame)
            error = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert error["event"] == "pusher:error", frame
        await ws.send('{"event":"pusher:bogus","data":{}}')
        assert "Unsupported" in json.loads(await ws.recv())["data"]["message"]
        # A user's own channel (`send_to_user`) is for that signed-in user only.
        await ws.send('{"event":"pusher:subscribe","data":{"channel":"#server-to-user-dave"}}')
        refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert refused["event"] == "pusher:subscription_error"
        assert refused["data"]["status"] == 403
        await ws.send('{"event":"pusher:ping","data":{}}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["event"] == "pusher:pong"


# --- two nodes ----------------------------------------------------------------------------------


async def test_pusher_on_one_node_and_centrifuge_on_another(tmp_path: Path) -> None:
    """Through one Redis broker: pusher-js on node 1 and centrifuge-python on node 2 see each
    other's events, and either node counts both subscribers."""
    ensure_service("redis")
    env = {"XSHATHRA_BROKER_PREFIX": f"xs_pz_{secrets.token_hex(4)}"}
    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        one = stack.enter_context(
            running_server(tmp_path / "n1", database_url=url, broker_url=broker, env=env)
        )
        two = stack.enter_context(
            running_server(
                tmp_path / "n2",
                database_url=url,
                broker_url=broker,
                env=env,
                admin_key=one.admin_key,
            )
        )
        app = new_app(one, pusher_client_events=True)
        rec = Recorder()
        token = realtime_token(two, app, "py", channels=["presence-both"])
        client = make_client(two, rec, token=token)
        await client.connect()
        try:
            await rec.next("server_subscribed")
            async with start_pusher_js(one, app, user="js") as js:
                await subscribed(js, "presence-both")
                await js.send("trigger", channel="presence-both", name="client-up", data={"n": 1})
                ctx = await rec.next("server_publication")
                assert ctx.pub.tags == {"event": "client-up"} and ctx.pub.data == {"n": 1}
                engine_api(
                    two,
                    app,
                    "publish",
                    {"channel": "presence-both", "data": {"n": 2}, "tags": {"event": "down"}},
                )
                got = await js.next("message")
                assert (got["name"], got["data"]) == ("down", {"n": 2})
                await asyncio.to_thread(lib(two, app).trigger, "presence-both", "via-2", "x")
                assert (await js.next("message"))["name"] == "via-2"
                info = await asyncio.to_thread(
                    lib(two, app).channel_info, "presence-both", ["subscription_count"]
                )
                assert info == {"occupied": True, "subscription_count": 2}
        finally:
            await client.disconnect()


async def test_presence_member_limit(server: ServerProcess) -> None:
    """100 members fill a presence channel; the 101st user is refused with LimitReached (4100)
    while one more connection of a present user still joins."""
    app = new_app(server)
    url = f"ws://127.0.0.1:{server.port}/app/{app['client_api_key']}?protocol=7"

    async def join(ws: Any, user: str) -> Json:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        socket_id = json.loads(hello["data"])["socket_id"]
        channel_data = json.dumps({"user_id": user})
        text = f"{socket_id}:presence-full:{channel_data}"
        digest = hmac.new(
            str(app["app_secret"]).encode(), text.encode(), hashlib.sha256
        ).hexdigest()
        subscribe = {
            "channel": "presence-full",
            "auth": f"{app['client_api_key']}:{digest}",
            "channel_data": channel_data,
        }
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": subscribe}))
        answer: Json = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return answer

    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(websockets.connect(url)) for _ in range(102)]
        for i, ws in enumerate(sockets[:100]):
            assert (await join(ws, f"u{i}"))["event"] == "pusher_internal:subscription_succeeded"
        refused = await join(sockets[100], "u-extra")
        assert refused["event"] == "pusher:subscription_error"
        assert (refused["data"]["type"], refused["data"]["status"]) == ("LimitReached", 4100)
        again = await join(sockets[101], "u7")  # a present user's second connection
        assert again["event"] == "pusher_internal:subscription_succeeded"
        assert json.loads(again["data"])["presence"]["count"] == 100


async def test_pusher_format_webhooks(server: ServerProcess) -> None:
    """A webhook listing Pusher's event names gets Pusher's bodies, signed so that the pusher
    library's `validate_webhook` accepts them."""
    app = new_app(server, pusher_client_events=True)
    names = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]
    with Receiver().running() as receiver:
        r = httpx.post(
            f"{server.base_url}/api/webhooks",
            headers={"X-API-Key": str(app["api_key"])},
            json={"url": receiver.url, "events": [*names, "client_event"]},
        )
        assert r.status_code == 201, r.text
        async with start_pusher_js(server, app, user="ann") as ann:
            await subscribed(ann, "presence-hook")
            async with start_pusher_js(server, app, user="bob") as bob:
                await subscribed(bob, "presence-hook")
                await ann.next("member_added")
                await bob.send("trigger", channel="presence-hook", name="client-wave", data=[1])
                await ann.next("message")
                await bob.send("exit")
                await ann.next("member_removed")
            await ann.send("exit")
            await ann.next("bye")
        requests = await asyncio.to_thread(receiver.wait_for, 7, 20.0)
    api = lib(server, app)
    events = []
    for request in requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        checked = api.validate_webhook(
            headers["x-pusher-key"], headers["x-pusher-signature"], request.body.decode()
        )
        assert checked is not None, request.body
        events += checked["events"]
    by_name: dict[str, list[Json]] = {}
    for event in events:
        by_name.setdefault(event["name"], []).append(event)
    assert by_name["channel_occupied"] == [{"name": "channel_occupied", "channel": "presence-hook"}]
    assert by_name["channel_vacated"] == [{"name": "channel_vacated", "channel": "presence-hook"}]
    assert sorted(e["user_id"] for e in by_name["member_added"]) == ["ann", "bob"]
    assert sorted(e["user_id"] for e in by_name["member_removed"]) == ["ann", "bob"]
    (client_event,) = by_name["client_event"]
    assert client_event["event"] == "client-wave" and json.loads(client_event["data"]) == [1]
    assert client_event["user_id"] == "bob"


async def test_a_disabled_app_closes_and_refuses(server: ServerProcess) -> None:
    """Disabling the app closes its Pusher connections with 4003 and its HTTP API answers 403
    at once (the signed request is still checked first)."""
    app = new_app(server)
    async with start_pusher_js(server, app) as js:
        await subscribed(js, "news")
        r = httpx.put(
            f"{server.base_url}/api/applications/{app['app_id']}",
            json={"status": False},
            headers=server.admin_headers(),
        )
        assert r.status_code == 200, r.text
        assert (await js.next("conn_error", lambda e: e["code"] == 4003))["code"] == 4003
    with pytest.raises(PusherForbidden):
        lib(server, app).trigger("news", "e", {})
