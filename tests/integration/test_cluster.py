"""Several nodes sharing PostgreSQL and a broker (Redis, then NATS): publications, presence,
history, recovery, server API commands and rate limits hold across nodes, and a node reports
broker outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.integration.test_engine_bad_input import closed_with, connect, replies, reply
from tests.support.clients import engine_api, realtime_token
from tests.support.server import ServerProcess, running_server, wait_health
from tests.support.services import (
    NATS_HOST,
    NATS_PORT,
    REDIS_HOST,
    REDIS_PORT,
    NatsServer,
    RedisServer,
    ensure_service,
    postgres_database,
    private_nats,
)

Json = dict[str, Any]
BROKERS = {
    "redis": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
    "nats": f"nats://{NATS_HOST}:{NATS_PORT}",
}


def shared_broker(kind: str) -> str:
    ensure_service(kind)
    return BROKERS[kind]


@pytest.fixture(scope="module", params=list(BROKERS))
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    """Three nodes on one PostgreSQL database and one broker (under a unique prefix)."""
    broker = shared_broker(request.param)
    env = {"XSHATHRA_BROKER_PREFIX": f"xs_it_{secrets.token_hex(4)}"}
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database())
        first = stack.enter_context(
            running_server(
                tmp_path_factory.mktemp("n1"), database_url=url, broker_url=broker, env=env
            )
        )
        nodes = [first] + [
            stack.enter_context(
                running_server(
                    tmp_path_factory.mktemp(f"n{i}"),
                    database_url=url,
                    broker_url=broker,
                    env=env,
                    admin_key=first.admin_key,
                )
            )
            for i in (2, 3)
        ]
        yield nodes


async def subscribe(ws: Any, channel: str) -> Json:
    """Subscribe and return the reply, whatever pushes share its frame (e.g. our own join)."""
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
    while True:
        for message in await replies(ws, 1):
            if message.get("id") == 2:
                return message


def recover_command(command_id: int, channel: str, position: Json) -> str:
    """Subscribe asking to recover from a position a subscribe reply gave."""
    subscribe = {
        "channel": channel,
        "recover": True,
        "epoch": position["epoch"],
        "offset": position.get("offset", 0),
    }
    return json.dumps({"id": command_id, "subscribe": subscribe})


async def next_push(ws: Any, kind: str, timeout: float = 5) -> Json:
    """The next push of this kind (pub, unsubscribe...), skipping others."""
    while True:
        for message in await replies(ws, 1, timeout=timeout):
            if kind in message.get("push", {}):
                return message


async def test_publication_presence_and_history_cross_nodes(cluster: list[ServerProcess]) -> None:
    n1, n2, n3 = cluster
    app = n1.create_app(name="cross")
    async with websockets.connect(n1.ws_url) as ws:
        await connect(ws, realtime_token(n1, app, "alice"))
        await subscribe(ws, "public:x")
        engine_api(n2, app, "publish", {"channel": "public:x", "data": {"from": "n2"}})
        push = await next_push(ws, "pub")
        assert push["push"]["pub"]["data"] == {"from": "n2"}
        presence = engine_api(n3, app, "presence", {"channel": "public:x"})["result"]["presence"]
        assert [c["user"] for c in presence.values()] == ["alice"]
        history = engine_api(n3, app, "history", {"channel": "public:x", "limit": 5})["result"]
        assert [p["data"] for p in history["publications"]] == [{"from": "n2"}]


async def test_recovery_on_another_node(cluster: list[ServerProcess]) -> None:
    n1, n2, n3 = cluster
    app = n1.create_app(name="recover-elsewhere")
    async with websockets.connect(n1.ws_url) as ws:
        await connect(ws, realtime_token(n1, app, "u"))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:r"}}))
        # The reply may share a frame with the client's own join push: pick the reply.
        position = next(m for m in await replies(ws, 1) if m.get("id") == 2)["subscribe"]
    for i in range(3):
        engine_api(n2, app, "publish", {"channel": "public:r", "data": i})
    async with websockets.connect(n3.ws_url) as ws:
        await connect(ws, realtime_token(n3, app, "u"))
        await ws.send(recover_command(2, "public:r", position))
        result = next(m for m in await replies(ws, 1) if m.get("id") == 2)["subscribe"]
    assert result["recovered"] is True
    assert [p["data"] for p in result["publications"]] == [0, 1, 2]


async def test_server_api_and_app_changes_reach_other_nodes(cluster: list[ServerProcess]) -> None:
    n1, n2, _ = cluster
    app = n1.create_app(name="control")
    async with websockets.connect(n1.ws_url) as ws:
        await connect(ws, realtime_token(n1, app, "target"))
        engine_api(n2, app, "subscribe", {"user": "target", "channel": "news"})
        assert (await reply(ws))["push"]["subscribe"] is not None
        engine_api(n2, app, "disconnect", {"user": "target"})
        assert await closed_with(ws) == 3503
    async with websockets.connect(n1.ws_url) as ws:
        await connect(ws, realtime_token(n1, app, "target"))
        r = httpx.put(
            f"{n2.base_url}/api/applications/{app['app_id']}",
            headers=n2.admin_headers(),
            json={"status": False},
        )
        assert r.status_code == 200
        assert await closed_with(ws) == 3507


def test_rate_limits_are_shared(cluster: list[ServerProcess]) -> None:
    n1, n2, _ = cluster
    app = n1.create_app(name="shared-limit", rate_limit=3)
    codes = [
        httpx.post(
            f"{node.base_url}/api/broadcast",
            headers={"X-API-Key": str(app["api_key"])},
            json={"room": "r", "event": "e"},
        ).status_code
        for node in (n1, n2, n1, n2)
    ]
    assert codes == [200, 200, 200, 429]


async def assert_broker_down(node: ServerProcess, app: Json) -> None:
    """While the broker is away: health 503, and a publish is refused with 500 and code 100."""
    await wait_health(node, 503)
    r = httpx.post(
        f"{node.base_url}/realtime/api/publish",
        headers={"X-API-Key": str(app["api_key"])},
        json={"channel": "public:o", "data": 1},
    )
    assert r.status_code == 500 and r.json()["error"]["code"] == 100


async def assert_told_to_resubscribe(node: ServerProcess, ws: Any) -> None:
    """Once the broker is back: health 200, and the client's subscription is ended with 2500
    (resubscribe and recover)."""
    await wait_health(node, 200)
    push = await next_push(ws, "unsubscribe", timeout=15)
    assert push["push"]["unsubscribe"]["code"] == 2500


async def test_redis_outage_is_reported_and_recovered(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Health is 503 while Redis is away and 200 after; clients are told to resubscribe."""
    with running_server(tmp_path, broker_url=redis_server.url) as node:
        app = node.create_app(name="outage")
        async with websockets.connect(node.ws_url) as ws:
            await connect(ws, realtime_token(node, app, "u"))
            await subscribe(ws, "public:o")
            redis_server.stop()
            try:
                await assert_broker_down(node, app)
            finally:
                redis_server.start()
            await assert_told_to_resubscribe(node, ws)


async def test_nats_outage_is_reported_and_recovered(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """Health is 503 while NATS is away and 200 after; clients are told to resubscribe, and
    recover what was published since from the history JetStream kept on disk."""
    with running_server(tmp_path, broker_url=nats_server.url) as node:
        app = node.create_app(name="outage")
        async with websockets.connect(node.ws_url) as ws:
            await connect(ws, realtime_token(node, app, "u"))
            position = (await subscribe(ws, "public:o"))["subscribe"]
            nats_server.stop()
            try:
                await assert_broker_down(node, app)
            finally:
                nats_server.start()
            await assert_told_to_resubscribe(node, ws)
            engine_api(node, app, "publish", {"channel": "public:o", "data": "missed"})
            await ws.send(recover_command(3, "public:o", position))
            while True:
                found = [m for m in await replies(ws, 1) if m.get("id") == 3]
                if found:
                    break
            result = found[0]["subscribe"]
            assert result["recovered"] is True
            assert [p["data"] for p in result["publications"]] == ["missed"]


@pytest.mark.parametrize("kind", list(BROKERS))
async def test_killed_node_clients_recover_elsewhere_and_presence_expires(
    kind: str, tmp_path: Path
) -> None:
    """SIGKILL one node: its client recovers on another node, its presence entries expire."""
    broker = shared_broker(kind)
    env = {"XSHATHRA_BROKER_PREFIX": f"xs_it_{secrets.token_hex(4)}", "XSHATHRA_PRESENCE_TTL": "2"}
    with (
        postgres_database() as url,
        running_server(tmp_path / "a", database_url=url, broker_url=broker, env=env) as a,
        running_server(
            tmp_path / "b", database_url=url, broker_url=broker, env=env, admin_key=a.admin_key
        ) as b,
    ):
        app = a.create_app(name="failover")
        async with websockets.connect(a.ws_url) as ws:
            await connect(ws, realtime_token(a, app, "survivor"))
            position = (await subscribe(ws, "public:f"))["subscribe"]
            a.process.kill()
            a.process.wait()
            with pytest.raises(ConnectionClosed) as gone:
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            assert gone.value.rcvd is None  # the node vanished: no close frame at all
        for i in range(2):
            engine_api(b, app, "publish", {"channel": "public:f", "data": i})
        async with websockets.connect(b.ws_url) as ws:
            await connect(ws, realtime_token(b, app, "survivor"))
            await ws.send(recover_command(2, "public:f", position))
            result = next(m for m in await replies(ws, 1) if m.get("id") == 2)["subscribe"]
            assert result["recovered"] is True
            assert [p["data"] for p in result["publications"]] == [0, 1]
            deadline = asyncio.get_running_loop().time() + 10
            while True:  # only the new connection is left once the dead node's entry expires
                users = engine_api(b, app, "presence", {"channel": "public:f"})["result"]
                if len(users["presence"]) == 1:
                    break
                assert asyncio.get_running_loop().time() < deadline, users
                await asyncio.sleep(0.3)  # expiry is time itself


async def test_graceful_shutdown_tells_clients_to_reconnect(tmp_path: Path) -> None:
    """SIGTERM closes client connections with 3001 (shutdown: reconnect elsewhere)."""
    import signal

    with running_server(tmp_path) as node:
        app = node.create_app(name="drain")
        async with websockets.connect(node.ws_url) as ws:
            await connect(ws, realtime_token(node, app, "u"))
            node.process.send_signal(signal.SIGTERM)
            assert await closed_with(ws, timeout=10) == 3001
        # uvicorn re-raises the signal once its graceful shutdown is done.
        assert node.process.wait(timeout=15) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in node.log()


async def test_broadcast_counts_subscribers_on_every_node(cluster: list[ServerProcess]) -> None:
    n1, n2, n3 = cluster
    app = n1.create_app(name="counts")
    async with websockets.connect(n1.ws_url) as w1, websockets.connect(n2.ws_url) as w2:
        for ws, node in ((w1, n1), (w2, n2)):
            await connect(ws, realtime_token(node, app, "u"))
            await subscribe(ws, "public:count")
        r = httpx.post(
            f"{n3.base_url}/api/broadcast",
            headers={"X-API-Key": str(app["api_key"])},
            json={"room": "public:count", "event": "e"},
        )
        assert r.json()["subscriber_count"] == 2
    r = httpx.post(
        f"{n3.base_url}/api/broadcast",
        headers={"X-API-Key": str(app["api_key"])},
        json={"room": "public:count", "event": "e"},
    )
    deadline = asyncio.get_running_loop().time() + 5
    while r.json()["subscriber_count"] != 0:  # the nodes forget closed connections on their own
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
        r = httpx.post(
            f"{n3.base_url}/api/broadcast",
            headers={"X-API-Key": str(app["api_key"])},
            json={"room": "public:count", "event": "e"},
        )


async def test_room_occupancy_webhooks_fire_once_across_nodes(cluster: list[ServerProcess]) -> None:
    """A room joined on two nodes is occupied once and vacated once, whatever the nodes."""
    from tests.support.receiver import Receiver

    n1, n2, _ = cluster
    app = n1.create_app(name="occupancy")
    with Receiver().running() as rx:
        r = httpx.post(
            f"{n1.base_url}/api/webhooks",
            headers={"X-API-Key": str(app["api_key"])},
            json={"url": rx.url, "events": ["room-occupied", "room-vacated"]},
        )
        assert r.status_code == 201
        async with websockets.connect(n1.ws_url) as w1:
            await connect(w1, realtime_token(n1, app, "a"))
            await subscribe(w1, "public:room")
            async with websockets.connect(n2.ws_url) as w2:
                await connect(w2, realtime_token(n2, app, "b"))
                await subscribe(w2, "public:room")
        got = await asyncio.to_thread(rx.wait_for, 2)
        events = [r.json()["event"] for r in got]
    assert events == ["room-occupied", "room-vacated"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats-no-jetstream", "has no JetStream"),
        ("nats://127.0.0.1:1", "cannot connect to NATS"),
        ("kafka://127.0.0.1:9092", "unsupported broker 'kafka'"),
    ],
)
def test_a_broker_that_cannot_serve_is_refused_at_start(
    url: str, expected: str, tmp_path: Path
) -> None:
    """A node does not start on a broker that lacks what it needs; it says which setting."""
    with contextlib.ExitStack() as stack:
        if url == "nats-no-jetstream":
            url = stack.enter_context(private_nats(str(tmp_path / "js"), jetstream=False)).url
        with pytest.raises(RuntimeError) as refused:
            stack.enter_context(running_server(tmp_path / "node", broker_url=url))
    assert "XSHATHRA_BROKER_URL" in str(refused.value) and expected in str(refused.value)
