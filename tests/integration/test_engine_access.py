"""Who may connect: allowed_domain against the browser's Origin, disabled and deleted apps
(refused, and their open connections closed), and the per-app and per-connection quotas."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import websockets

from tests.integration.test_engine_bad_input import closed_with, connect, replies
from tests.support.clients import realtime_token
from tests.support.server import ServerProcess, running_server


async def test_allowed_domain_checks_the_origin(server: ServerProcess) -> None:
    app = server.create_app(name="origin", allowed_domain="example.com")
    token = realtime_token(server, app, "u")
    for origin in ("https://example.com", "https://app.example.com"):
        async with websockets.connect(server.ws_url, origin=origin) as ws:  # type: ignore[arg-type]
            assert "connect" in await connect(ws, token), origin
    async with websockets.connect(server.ws_url) as ws:  # not a browser: no Origin header
        assert "connect" in await connect(ws, token)
    for origin in ("https://evil.com", "https://notexample.com", "https://example.com.evil.io"):
        async with websockets.connect(server.ws_url, origin=origin) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            assert await closed_with(ws) == 3507, origin


async def test_disabling_an_app_refuses_and_closes_its_connections(server: ServerProcess) -> None:
    app = server.create_app(name="disable")
    token = realtime_token(server, app, "u")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, token)
        r = httpx.put(
            f"{server.base_url}/api/applications/{app['app_id']}",
            headers=server.admin_headers(),
            json={"status": False},
        )
        assert r.status_code == 200
        assert await closed_with(ws) == 3507
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        assert await closed_with(ws) == 3507


async def test_deleting_an_app_closes_its_connections(server: ServerProcess) -> None:
    app = server.create_app(name="delete")
    async with websockets.connect(server.ws_url) as ws:
        await connect(ws, realtime_token(server, app, "u"))
        r = httpx.delete(
            f"{server.base_url}/api/applications/{app['app_id']}", headers=server.admin_headers()
        )
        assert r.status_code == 200
        assert await closed_with(ws) == 3507


async def test_quotas(tmp_path: Path) -> None:
    env = {"XSHATHRA_MAX_CONNECTIONS_PER_APP": "1", "XSHATHRA_MAX_CHANNELS_PER_CONNECTION": "2"}
    with running_server(tmp_path, env=env) as srv:
        app = srv.create_app(name="quota")
        token = realtime_token(srv, app, "u")
        async with websockets.connect(srv.ws_url) as first:
            await connect(first, token)
            async with websockets.connect(srv.ws_url) as second:
                await second.send(json.dumps({"id": 1, "connect": {"token": token}}))
                assert await closed_with(second) == 3504
            for i, channel in enumerate(["public:a", "public:b", "public:c"], start=2):
                await first.send(json.dumps({"id": i, "subscribe": {"channel": channel}}))
            answers = await replies(first, 3)
            assert [("error" in a) for a in answers] == [False, False, True]
            assert answers[2]["error"]["code"] == 106
        other = srv.create_app(name="quota-other")
        async with websockets.connect(srv.ws_url) as ws:  # the quota is per app
            assert "connect" in await connect(ws, realtime_token(srv, other, "u"))
