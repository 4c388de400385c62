"""centrifuge-js's protobuf build (`centrifuge/build/protobuf`, subprotocol
`centrifuge-protobuf`) under Node, next to its JSON build on the same channel: both get every
publication with the same data and offsets; presence, history, client publish and recovery
work over protobuf. Driven through tests/js/scenario.mjs with XS_PROTOBUF=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.test_engine_js_client import lost, signing_env, start_js
from tests.integration.test_engine_js_client import pytestmark as js_available
from tests.support.clients import engine_api
from tests.support.server import ServerProcess, running_server

Json = dict[str, Any]
pytestmark = js_available
PROTOBUF = {"XS_PROTOBUF": "1"}
CHAT = {
    "chat": {
        "allow_subscribe_for_client": True,
        "allow_publish_for_subscriber": True,
        "allow_presence_for_subscriber": True,
        "allow_history_for_subscriber": True,
        "presence": True,
        "history_size": 10,
        "history_ttl": 300,
    }
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # An expired connection is closed 2 s after `exp`: the refresh test runs against it.
    env = {"XSHATHRA_EXPIRED_CLOSE_DELAY": "2"}
    with running_server(tmp_path_factory.mktemp("node"), env=env) as proc:
        yield proc


def chat_app(server: ServerProcess, name: str) -> Json:
    app = server.create_app(name=name)
    r = httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={"namespaces": CHAT},
    )
    assert r.status_code == 200, r.text
    return app


def is_pub(data: object) -> Any:
    return lambda msg: msg["data"] == data


async def test_json_and_protobuf_builds_get_the_same_publications(server: ServerProcess) -> None:
    app = chat_app(server, "js-pb-mixed")
    channel = {"XS_CHANNEL": "chat:room"}
    async with (
        start_js(server, app, XS_USER="json-user", **channel) as as_json,
        start_js(server, app, XS_USER="pb-user", **channel, **PROTOBUF) as as_pb,
    ):
        for client in (as_json, as_pb):
            await client.next("connected")
            await client.next("subscribed")
        engine_api(
            server,
            app,
            "publish",
            {"channel": "chat:room", "data": {"from": "api"}, "tags": {"event": "e"}},
        )
        await as_json.next("publication", is_pub({"from": "api"}))
        await as_pb.next("publication", is_pub({"from": "api"}))
        # A client's own publication may come before its publish reply: wait for the
        # publications (next() skips what it does not wait for), count the replies after.
        await as_pb.send("publish", data={"from": "protobuf"})
        for client in (as_json, as_pb):
            await client.next("publication", is_pub({"from": "protobuf"}))
        await as_json.send("publish", data={"from": "json"})
        for client in (as_json, as_pb):
            await client.next("publication", is_pub({"from": "json"}))
        await as_pb.send("state")
        await as_pb.next("state")
        await as_json.send("state")
        await as_json.next("state")
        assert len(as_pb.seen("published")) == len(as_json.seen("published")) == 1

        def seen(client: Any) -> list[tuple[object, object, object, object]]:
            return [
                # No tags: absent in JSON, an empty map in protobufjs.
                (p["data"], p["offset"], p["user"], p["tags"] or None)
                for p in client.seen("publication")
            ]

        assert seen(as_json) == seen(as_pb)
        assert [(d, o, u) for d, o, u, _ in seen(as_pb)] == [
            ({"from": "api"}, 1, None),
            ({"from": "protobuf"}, 2, "pb-user"),
            ({"from": "json"}, 3, "json-user"),
        ]
        assert seen(as_pb)[0][3] == {"event": "e"}

        await as_pb.send("presence")
        assert sorted((await as_pb.next("presence"))["users"]) == ["json-user", "pb-user"]
        await as_pb.send("presence_stats")
        stats = await as_pb.next("presence_stats")
        assert (stats["clients"], stats["users"]) == (2, 2)
        await as_pb.send("history", limit=10)
        history = await as_pb.next("history")
        assert history["data"] == [{"from": "api"}, {"from": "protobuf"}, {"from": "json"}]
        assert history["offsets"] == [1, 2, 3] and history["offset"] == 3


async def test_protobuf_build_recovers_after_reconnect(server: ServerProcess) -> None:
    app = server.create_app(name="js-pb-recover")
    async with start_js(server, app, **PROTOBUF) as client:
        await client.next("connected")
        assert (await client.next("subscribed"))["recoverable"] is True
        engine_api(server, app, "publish", {"channel": "public:js", "data": 0})
        await client.next("publication", is_pub(0))
        await client.send("disconnect")
        await client.next("disconnected")
        for i in (1, 2):
            engine_api(server, app, "publish", {"channel": "public:js", "data": i})
        await client.send("connect")
        again = await client.next("subscribed", lambda m: m["wasRecovering"])
        assert again["recovered"] is True
        got = [await client.next("publication") for _ in (1, 2)]
        assert [(p["data"], p["offset"]) for p in got] == [(1, 2), (2, 3)]


async def test_protobuf_build_refreshes_tokens(server: ServerProcess) -> None:
    """3-second connection and subscription tokens: refresh and sub_refresh over protobuf keep
    both alive well past the first deadline."""
    app = server.create_app(name="js-pb-refresh")
    env = signing_env(app, XS_TTL="3", XS_SUB_TTL="3", XS_SUB_TOKEN="1", XS_CHANNEL="private-js")
    async with start_js(server, app, **env, **PROTOBUF) as client:
        await client.next("subscribed")
        await client.next("token", lambda m: m["calls"] >= 3, timeout=15)
        await client.next("sub_token", lambda m: m["calls"] >= 3, timeout=5)
        assert [m for m in client.seen("connecting", "subscribing") if lost(m)] == []
        assert client.seen("disconnected", "unsubscribed", "client_error", "sub_error") == []
        engine_api(server, app, "publish", {"channel": "private-js", "data": "still here"})
        assert (await client.next("publication"))["data"] == "still here"


async def test_protobuf_build_server_side_subscriptions_and_disconnect(
    server: ServerProcess,
) -> None:
    app = server.create_app(name="js-pb-srvsub")
    env = {"XS_CHANNELS": "news,public:feed", "XS_NO_SUBSCRIBE": "1", **PROTOBUF}
    async with start_js(server, app, **env) as client:
        first = await client.next("server_subscribed")
        second = await client.next("server_subscribed")
        assert {first["channel"], second["channel"]} == {"news", "public:feed"}
        engine_api(server, app, "publish", {"channel": "public:feed", "data": "f"})
        pub = await client.next("server_publication")
        assert (pub["channel"], pub["data"], pub["offset"]) == ("public:feed", "f", 1)
        engine_api(
            server,
            app,
            "disconnect",
            {"user": "js-user", "disconnect": {"code": 3503, "reason": "x"}},
        )
        gone = await client.next("disconnected")
        assert (gone["code"], gone["reason"]) == (3503, "x")
