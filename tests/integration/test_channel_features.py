"""Channel features of SPEC §8 with the real clients: fossil delta compression (centrifuge-js
and centrifuge-python apply the deltas), cache recovery mode (centrifuge-js with `since`),
publication tags filters (both clients), and positioning's 3010 when the broker loses
publications (centrifuge-python, the node's Redis link cut under it)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from centrifuge import Client, DeltaType, Filter
from centrifuge.filter import FilterNode

from tests.integration.test_engine_js_client import JS_DIR, start_js
from tests.support.clients import (
    Recorder,
    SubEvents,
    TcpProxy,
    engine_api,
    make_client,
    realtime_token,
)
from tests.support.server import ServerProcess, running_server
from tests.support.services import REDIS_HOST, REDIS_PORT, ensure_redis, ensure_service

Json = dict[str, Any]
NAMESPACES: Json = {
    "docs": {
        "history_size": 10,
        "history_ttl": 300,
        "allow_subscribe_for_client": True,
        "allowed_delta_types": ["fossil"],
    },
    "cache": {
        "history_size": 1,
        "history_ttl": 300,
        "allow_subscribe_for_client": True,
        "force_recovery_mode": "cache",
    },
    "quotes": {"allow_subscribe_for_client": True, "allow_tags_filter": True},
    "pos": {
        "history_size": 100,
        "history_ttl": 300,
        "allow_subscribe_for_client": True,
        "force_positioning": True,
    },
}
needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "centrifuge").exists(),
    reason="Node or the npm packages are missing (make test installs them)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("node")) as proc:
        yield proc


@pytest.fixture(scope="module")
def app(server: ServerProcess) -> Json:
    app = server.create_app(name="features")
    r = httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={"namespaces": NAMESPACES},
    )
    assert r.status_code == 200, r.text
    return app


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.disconnect()


def doc(version: int) -> Json:
    """Successive versions of one document: most of it stays the same."""
    return {
        "title": "Quarterly figures",
        "rows": [{"region": f"region-{i}", "sales": i * 100} for i in range(20)],
        "version": version,
        "note": "ünïcode stays intact " * (version % 2 + 1),
    }


async def connected(
    server: ServerProcess, app: Json, rec: Recorder, clients: list[Client]
) -> Client:
    # In a thread: the positioning test relays the node's Redis link in this event loop.
    token = await asyncio.to_thread(realtime_token, server, app, f"u{len(clients)}")
    client = make_client(server, rec, token=token)
    clients.append(client)
    await client.connect()
    await client.ready(5)
    return client


# --- delta compression ----------------------------------------------------------------------


@needs_node
async def test_js_client_rebuilds_publications_from_fossil_deltas(
    server: ServerProcess, app: Json
) -> None:
    """centrifuge-js with `delta: "fossil"`: every publication's data arrives intact, and all
    but the first came as deltas, much smaller than the data (the client's own counters)."""
    options = json.dumps({"delta": "fossil"})
    async with start_js(server, app, XS_CHANNEL="docs:js", XS_SUB_OPTIONS=options) as js:
        await js.next("subscribed")
        for version in range(4):
            engine_api(
                server, app, "publish", {"channel": "docs:js", "data": doc(version), "delta": True}
            )
            assert (await js.next("publication"))["data"] == doc(version)
        await js.send("delta_stats")
        stats = await js.next("delta_stats")
        assert stats["numFullPayloads"] == 1 and stats["numDeltaPayloads"] == 3
        assert stats["bytesReceived"] < stats["bytesDecoded"] / 2


async def test_python_client_rebuilds_publications_from_fossil_deltas(
    server: ServerProcess, app: Json, clients: list[Client]
) -> None:
    """centrifuge-python with DeltaType.FOSSIL, beside a plain subscriber: both see the same
    data; the HTTP publish `delta` flag and publishes without it mix freely."""
    rec, plain_rec = Recorder(), Recorder()
    client = await connected(server, app, rec, clients)
    plain = await connected(server, app, plain_rec, clients)
    sub = client.new_subscription("docs:py", SubEvents(rec), delta=DeltaType.FOSSIL)
    plain_sub = plain.new_subscription("docs:py", SubEvents(plain_rec))
    for s in (sub, plain_sub):
        await s.subscribe()
        await s.ready(5)
    for version in range(5):
        body = {"channel": "docs:py", "data": doc(version), "delta": version != 2}
        engine_api(server, app, "publish", body)
    for recorder in (rec, plain_rec):
        got = [(await recorder.next("publication")).pub.data for _ in range(5)]
        assert got == [doc(v) for v in range(5)]


# --- cache recovery mode -----------------------------------------------------------------------


@needs_node
async def test_cache_mode_gives_the_latest_publication_on_subscribe(
    server: ServerProcess, app: Json
) -> None:
    """force_recovery_mode "cache": a centrifuge-js subscription recovering from `since`
    gets the channel's latest publication, and only that one."""
    for n in range(3):
        engine_api(server, app, "publish", {"channel": "cache:now", "data": {"playing": n}})
    options = json.dumps({"since": {"offset": 0, "epoch": ""}})
    async with start_js(server, app, XS_CHANNEL="cache:now", XS_SUB_OPTIONS=options) as js:
        subscribed = await js.next("subscribed")
        assert subscribed["wasRecovering"] is True and subscribed["recovered"] is True
        pub = await js.next("publication")
        assert pub["data"] == {"playing": 2} and pub["offset"] == 3
        engine_api(server, app, "publish", {"channel": "cache:now", "data": {"playing": 3}})
        assert (await js.next("publication"))["data"] == {"playing": 3}
        assert [m["data"] for m in js.seen("publication")] == [{"playing": 2}, {"playing": 3}]


# --- tags filters --------------------------------------------------------------------------------


QUOTES = [
    ({"ticker": "AAPL", "price": "150"}, True),
    ({"ticker": "AAPL", "price": "90"}, False),
    ({"ticker": "GOOG", "price": "300"}, False),
    ({"ticker": "MSFT", "price": "120.5"}, True),
    ({"ticker": "MSFT", "source": "test"}, False),
]


def publish_quotes(server: ServerProcess, app: Json, channel: str) -> None:
    for i, (tags, _) in enumerate(QUOTES):
        engine_api(server, app, "publish", {"channel": channel, "data": {"i": i}, "tags": tags})


EXPECTED = [i for i, (_, passes) in enumerate(QUOTES) if passes]


async def test_python_client_gets_only_publications_its_filter_passes(
    server: ServerProcess, app: Json, clients: list[Client]
) -> None:
    """centrifuge-python's Filter helpers: the server delivers only matching publications."""
    rec = Recorder()
    client = await connected(server, app, rec, clients)
    tags_filter = Filter.all(
        Filter.is_in("ticker", ["AAPL", "MSFT"]),
        Filter.gte("price", "100"),
    )
    sub = client.new_subscription("quotes:py", SubEvents(rec), tags_filter=tags_filter)
    await sub.subscribe()
    await sub.ready(5)
    publish_quotes(server, app, "quotes:py")
    engine_api(
        server,
        app,
        "publish",
        {"channel": "quotes:py", "data": "end", "tags": {"ticker": "AAPL", "price": "100"}},
    )
    got = []
    while (data := (await rec.next("publication")).pub.data) != "end":
        got.append(data["i"])
    assert got == EXPECTED


async def test_python_client_with_a_bad_filter_is_told_why(
    server: ServerProcess, app: Json, clients: list[Client]
) -> None:
    """A malformed filter is refused with 107 and a message naming the fault; the connection
    stays up."""
    rec = Recorder()
    client = await connected(server, app, rec, clients)
    bad = FilterNode({"key": "price", "cmp": "between", "val": "1"})
    sub = client.new_subscription("quotes:bad", SubEvents(rec), tags_filter=bad)
    await sub.subscribe()
    unsubscribed = await rec.next("unsubscribed")
    assert unsubscribed.code == 107 and "unknown comparison" in unsubscribed.reason
    assert rec.kinds("disconnected") == []


@needs_node
async def test_js_client_gets_only_publications_its_filter_passes(
    server: ServerProcess, app: Json
) -> None:
    tags_filter = {
        "op": "and",
        "nodes": [
            {"key": "ticker", "cmp": "in", "vals": ["AAPL", "MSFT"]},
            {"op": "not", "nodes": [{"key": "price", "cmp": "lt", "val": "100"}]},
            {"key": "price", "cmp": "ex"},
        ],
    }
    options = json.dumps({"tagsFilter": tags_filter})
    async with start_js(server, app, XS_CHANNEL="quotes:js", XS_SUB_OPTIONS=options) as js:
        await js.next("subscribed")
        publish_quotes(server, app, "quotes:js")
        for i in EXPECTED:
            assert (await js.next("publication"))["data"] == {"i": i}
        engine_api(server, app, "publish", {"channel": "quotes:js", "data": "end"})
        engine_api(
            server,
            app,
            "publish",
            {"channel": "quotes:js", "data": "end", "tags": {"ticker": "AAPL", "price": "1e3"}},
        )
        assert (await js.next("publication"))["data"] == "end"
        assert len(js.seen("publication")) == len(EXPECTED) + 1


# --- positioning -------------------------------------------------------------------------------


async def test_positioned_subscriber_is_disconnected_when_the_broker_loses_messages(
    tmp_path_factory: pytest.TempPathFactory, clients: list[Client]
) -> None:
    """The node's link to Redis is cut (what was in flight on it is lost): a positioned
    centrifuge-python subscriber is disconnected with 3010 (insufficient state), reconnects
    and resubscribes recovering from its position.

    The relay to Redis runs in this test's event loop, so every blocking call (the server's
    start, HTTP requests that make the node talk to Redis) runs in a thread."""
    ensure_redis()
    async with TcpProxy(REDIS_PORT) as proxy:
        env = {"XSHATHRA_BROKER_PREFIX": f"xs-pos-{secrets.token_hex(4)}"}
        started = running_server(
            tmp_path_factory.mktemp("pos"),
            broker_url=f"redis://127.0.0.1:{proxy.port}/0",
            env=env,
        )
        node = await asyncio.to_thread(started.__enter__)
        try:
            app = await asyncio.to_thread(node.create_app, name="pos")
            r = await asyncio.to_thread(
                httpx.put,
                f"{node.base_url}/api/applications/{app['app_id']}",
                headers={"X-API-Key": str(app["api_key"])},
                json={"namespaces": NAMESPACES},
            )
            assert r.status_code == 200, r.text
            rec = Recorder()
            client = await connected(node, app, rec, clients)
            sub = client.new_subscription(
                "pos:x", SubEvents(rec), positioned=True, recoverable=True
            )
            await sub.subscribe()
            await sub.ready(5)
            body = {"channel": "pos:x", "data": 1}
            await asyncio.to_thread(engine_api, node, app, "publish", body)
            assert (await rec.next("publication")).pub.data == 1
            proxy.drop()
            lost = await rec.next("connecting", lambda c: c.code != 0, timeout=15)
            assert lost.code == 3010
            subscribed = await rec.next("subscribed", timeout=15)
            assert subscribed.was_recovering is True
        finally:
            await client_cleanup(clients)
            await asyncio.to_thread(started.__exit__, None, None, None)


async def client_cleanup(clients: list[Client]) -> None:
    """Disconnect now, while the node is still up (the fixture would do it after)."""
    for client in clients:
        await client.disconnect()


# --- across nodes ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_deltas_and_filters_across_two_nodes(
    kind: str, tmp_path_factory: pytest.TempPathFactory, clients: list[Client]
) -> None:
    """Published on one node, delivered on another: the `delta` flag travels through the
    broker, and the receiving node sends deltas (and applies filters) for its subscribers."""
    from contextlib import ExitStack

    from tests.support.services import postgres_database

    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/0" if kind == "redis" else "nats://127.0.0.1:4222"
    ensure_service(kind)
    env = {"XSHATHRA_BROKER_PREFIX": f"xs_cf_{secrets.token_hex(4)}"}
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        first = stack.enter_context(
            running_server(
                tmp_path_factory.mktemp("a"), database_url=url, broker_url=broker, env=env
            )
        )
        second = stack.enter_context(
            running_server(
                tmp_path_factory.mktemp("b"),
                database_url=url,
                broker_url=broker,
                env=env,
                admin_key=first.admin_key,
            )
        )
        app = first.create_app(name="two")
        r = httpx.put(
            f"{first.base_url}/api/applications/{app['app_id']}",
            headers={"X-API-Key": str(app["api_key"])},
            json={"namespaces": NAMESPACES},
        )
        assert r.status_code == 200, r.text
        rec, frec = Recorder(), Recorder()
        client = await connected(second, app, rec, clients)
        filtered = await connected(second, app, frec, clients)
        sub = client.new_subscription("docs:two", SubEvents(rec), delta=DeltaType.FOSSIL)
        fsub = filtered.new_subscription(
            "quotes:two", SubEvents(frec), tags_filter=Filter.eq("ticker", "AAPL")
        )
        for s in (sub, fsub):
            await s.subscribe()
            await s.ready(5)
        for version in range(4):
            body = {"channel": "docs:two", "data": doc(version), "delta": True}
            engine_api(first, app, "publish", body)
        assert [(await rec.next("publication")).pub.data for _ in range(4)] == [
            doc(v) for v in range(4)
        ]
        for ticker in ("GOOG", "AAPL"):
            body = {"channel": "quotes:two", "data": ticker, "tags": {"ticker": ticker}}
            engine_api(first, app, "publish", body)
        assert (await frec.next("publication")).pub.data == "AAPL"
        await client_cleanup(clients)
