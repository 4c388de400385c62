"""Analytics after a scripted sequence of connections, users and publications: on one node,
across a restart, and summed over two nodes. Plus the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.integration.test_engine_bad_input import connect, replies, reply
from tests.support.clients import realtime_token
from tests.support.server import ServerProcess, running_server
from tests.support.services import postgres_database

Json = dict[str, Any]


def metrics(srv: ServerProcess, app: Json, period: str = "24h") -> Json:
    r = httpx.get(
        f"{srv.base_url}/api/analytics?period={period}", headers={"X-API-Key": str(app["api_key"])}
    )
    assert r.status_code == 200, r.text
    result: Json = r.json()["metrics"]
    return result


@contextlib.asynccontextmanager
async def user(srv: ServerProcess, app: Json, name: str) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(srv.ws_url) as ws:
        await connect(ws, realtime_token(srv, app, name))
        yield ws


def broadcast(srv: ServerProcess, app: Json) -> None:
    r = httpx.post(
        f"{srv.base_url}/api/broadcast",
        headers={"X-API-Key": str(app["api_key"])},
        json={"room": "chat:r", "event": "e", "data": 1},
    )
    assert r.status_code == 200


async def test_scripted_sequence_on_one_node(server: ServerProcess) -> None:
    app = server.create_app(name="an1")
    r = httpx.put(
        f"{server.base_url}/api/applications/{app['app_id']}",
        headers={"X-API-Key": str(app["api_key"])},
        json={
            "namespaces": {
                "chat": {"allow_subscribe_for_client": True, "allow_publish_for_subscriber": True}
            }
        },
    )
    assert r.status_code == 200
    async with (
        user(server, app, "alice") as a1,
        user(server, app, "alice"),
        user(server, app, "bob"),
    ):
        broadcast(server, app)
        broadcast(server, app)
        await a1.send(json.dumps({"id": 2, "subscribe": {"channel": "chat:r"}}))
        await reply(a1)
        await a1.send(json.dumps({"id": 3, "publish": {"channel": "chat:r", "data": 3}}))
        assert any("publish" in m for m in await replies(a1, 2))  # reply + own publication
        m = metrics(server, app)
        assert m["connections"] == {"total": 3, "current": 3}
        assert m["events"] == {"total": 3, "broadcasts": 2}
        assert m["users"] == {"online": 2, "total": 2}
    m = metrics(server, app, "1h")
    assert m["connections"] == {"total": 3, "current": 0}
    assert m["users"] == {"online": 0, "total": 2} and m["events"]["total"] == 3
    other = server.create_app(name="an1-other")
    assert metrics(server, other)["events"]["total"] == 0  # counted per app


async def test_counts_survive_a_restart(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'an.db'}"
    with running_server(tmp_path, database_url=db) as first:
        app = first.create_app(name="an2")
        async with user(first, app, "carol"):
            broadcast(first, app)
        first.process.send_signal(signal.SIGTERM)  # graceful: the last counts are flushed
        first.process.wait(timeout=15)
    with running_server(tmp_path, database_url=db, admin_key=first.admin_key) as second:
        m = metrics(second, app)
    assert m["connections"]["total"] == 1 and m["events"]["total"] == 1
    assert m["users"]["total"] == 1 and m["connections"]["current"] == 0


async def test_figures_are_summed_across_two_nodes(tmp_path: Path) -> None:
    with (
        postgres_database() as url,
        running_server(tmp_path / "a", database_url=url) as a,
        running_server(tmp_path / "b", database_url=url, admin_key=a.admin_key) as b,
    ):
        app = a.create_app(name="an3")
        async with user(a, app, "dave"), user(b, app, "erin"):
            broadcast(a, app)
            broadcast(b, app)
            deadline = time.monotonic() + 15
            # Each node flushes every 2 s: wait until node A sees node B's flush.
            while True:
                m = metrics(a, app)
                if m["connections"]["current"] == 2 and m["events"]["total"] == 2:
                    break
                assert time.monotonic() < deadline, m
                await asyncio.sleep(0.2)
            assert m["users"] == {"online": 2, "total": 2}
            assert m["connections"]["total"] == 2 and m["events"]["broadcasts"] == 2


async def test_prometheus_metrics(server: ServerProcess) -> None:
    app = server.create_app(name="prom")
    async with user(server, app, "frank") as ws:
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:m"}}))
        await reply(ws)
        httpx.post(
            f"{server.base_url}/realtime/api/publish",
            headers={"X-API-Key": str(app["api_key"])},
            json={"channel": "public:m", "data": 1},
        )
        await reply(ws)
        text = httpx.get(f"{server.base_url}/metrics").text
    assert "xshathra_connections " in text and "xshathra_subscriptions " in text
    assert 'xshathra_publications_total{namespace_kind="public",origin="api"} 1.0' in text
    assert "xshathra_messages_delivered_total" in text
    # What a soak watches: at least the server's own tasks are alive; no delivery is running.
    tasks = re.search(r"^xshathra_asyncio_tasks (\S+)$", text, re.M)
    assert tasks is not None and float(tasks.group(1)) >= 1
    assert "xshathra_webhook_attempts_in_flight 0.0" in text
    assert (
        'xshathra_http_requests_total{method="POST",route="/realtime/api/{method}",status="200"}'
        in text
    )
    assert "xshathra_webhook_deliveries_total" in text
