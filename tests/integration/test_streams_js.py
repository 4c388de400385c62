"""centrifuge-js (npm `centrifuge`, unmodified) over its bidirectional emulation transports,
`http_stream` (fetch streaming) and `sse` (the npm `eventsource` package as its EventSource),
with `emulationEndpoint` for the commands: connect, subscribe, publications, client publish,
presence, history and server disconnects, on one node and on two nodes sharing Redis with every
emulation request sent to the node that does not hold the stream (Redis, then NATS).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_cluster import shared_broker
from tests.integration.test_engine_js_client import JS_DIR, Json, start_js
from tests.support.clients import engine_api, realtime_token
from tests.support.server import ServerProcess, cluster_nodes

pytestmark = pytest.mark.skipif(
    not (JS_DIR / "node_modules" / "eventsource").exists(),
    reason="the npm packages are missing (make test installs them)",
)

TRANSPORTS = ["http_stream", "sse"]
CHAT = {
    "chat": {
        "allow_subscribe_for_client": True,
        "allow_publish_for_subscriber": True,
        "presence": True,
        "allow_presence_for_subscriber": True,
        "history_size": 10,
        "history_ttl": 300,
        "allow_history_for_subscriber": True,
        "force_recovery": True,
    }
}


@pytest.fixture(scope="module", params=["redis", "nats"])
def two_nodes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    """Two nodes on one PostgreSQL database and one broker, Redis then NATS (under a unique
    prefix)."""
    broker = shared_broker(request.param)
    env = {"XSHATHRA_BROKER_PREFIX": f"xs_st_{secrets.token_hex(4)}"}
    with cluster_nodes(tmp_path_factory, broker, env) as nodes:
        yield nodes


def chat_app(server: ServerProcess, name: str) -> Json:
    app = server.create_app(name=name)
    r = httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={"namespaces": CHAT},
    )
    assert r.status_code == 200, r.text
    return app


async def exercise(
    stream_node: ServerProcess, api_node: ServerProcess, app: Json, **env: str
) -> None:
    """What every emulated client must manage, whichever nodes hold its stream and take its
    commands: connect, subscribe, a server publication, its own publication, presence, history,
    then a server disconnect that it reconnects after."""
    async with start_js(stream_node, app, XS_CHANNEL="chat:room", **env) as client:
        connected = await client.next("transport")
        assert connected["name"] == env["XS_TRANSPORT"]
        assert (await client.next("subscribed"))["recoverable"] is True
        engine_api(api_node, app, "publish", {"channel": "chat:room", "data": {"n": 1}})
        pub = await client.next("publication")
        assert (pub["data"], pub["offset"]) == ({"n": 1}, 1)

        await client.send("publish", data={"text": "from js"})
        mine = await client.next("publication", lambda m: m["data"] == {"text": "from js"})
        assert mine["user"] == "js-user"
        if not client.seen("published"):
            await client.next("published")

        await client.send("presence")
        assert (await client.next("presence"))["users"] == ["js-user"]
        await client.send("presence_stats")
        stats = await client.next("presence_stats")
        assert (stats["clients"], stats["users"]) == (1, 1)
        await client.send("history", limit=10)
        assert (await client.next("history"))["offsets"] == [1, 2]

        # A server disconnect with reconnect: the disconnect push ends the stream, the client
        # comes back on a new stream (new session) and recovers its subscription.
        engine_api(
            api_node,
            app,
            "disconnect",
            {"user": "js-user", "disconnect": {"code": 3011, "reason": "again"}},
        )
        assert (await client.next("connecting", lambda m: m["code"] != 0))["code"] == 3011
        await client.next("connected")
        engine_api(api_node, app, "publish", {"channel": "chat:room", "data": {"n": 3}})
        assert (await client.next("publication", lambda m: m["data"] == {"n": 3}))["offset"] == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_emulated_transport_one_node(server: ServerProcess, transport: str) -> None:
    app = chat_app(server, f"js-{transport}")
    await exercise(server, server, app, XS_TRANSPORT=transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_emulation_requests_reach_the_stream_through_another_node(
    two_nodes: list[ServerProcess], transport: str
) -> None:
    """The stream is held by node A; every command goes to node B's emulation endpoint, which
    hands it over the broker's control bus to A."""
    a, b = two_nodes
    app = chat_app(a, f"js-two-{transport}")
    await exercise(
        a, b, app, XS_TRANSPORT=transport, XS_EMULATION=f"{b.base_url}/realtime/emulation"
    )


async def test_server_disconnect_without_reconnect_ends_the_stream(server: ServerProcess) -> None:
    app = server.create_app(name="js-sse-kick")
    async with start_js(server, app, XS_TRANSPORT="sse") as client:
        await client.next("subscribed")
        engine_api(server, app, "disconnect", {"user": "js-user"})
        gone = await client.next("disconnected")
        assert gone["code"] == 3503


async def test_uni_sse_on_one_node_gets_what_is_published_on_the_other(
    two_nodes: list[ServerProcess],
) -> None:
    """A plain uni_sse client on node B, subscribed from its token; a publication made through
    node A's server API reaches it."""
    a, b = two_nodes
    app = a.create_app(name="uni-two")
    token = realtime_token(a, app, "plain", channels=["public:both"])
    params = {"cf_connect": json.dumps({"token": token})}
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", f"{b.base_url}/realtime/connection/uni_sse", params=params) as r,
    ):
        lines = r.aiter_lines()

        async def next_data() -> Json:
            """The next push other than a join (its own, on `public:`, may come first)."""
            async for line in lines:
                if line.startswith("data: ") and "join" not in (push := json.loads(line[6:])):
                    return push  # type: ignore[no-any-return]
            raise AssertionError("stream ended")

        assert "public:both" in (await asyncio.wait_for(next_data(), 10))["connect"]["subs"]
        await asyncio.to_thread(
            engine_api, a, app, "publish", {"channel": "public:both", "data": "across"}
        )
        pub = await asyncio.wait_for(next_data(), 10)
        assert pub == {"channel": "public:both", "pub": {"data": "across", "offset": 1}}
