"""The seam between uvicorn and the engine's WebSocket protocol class (STYLE.md, "Speed").

uvicorn hands upgraded connections to `CentrifugeWebSocketProtocol` through its `ws` setting;
these tests pin that behaviour so a uvicorn upgrade that changes the hand-over fails here.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from importlib import metadata
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def test_uvicorn_is_the_pinned_version() -> None:
    """The seam relies on uvicorn internals; the installed version is the one pinned."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(d.split("==")[1] for d in deps if d.startswith("uvicorn=="))
    assert metadata.version("uvicorn") == pinned


def _token(server: ServerProcess) -> str:
    app = server.create_app(name="seam")
    r = httpx.post(
        f"{server.base_url}/api/realtime/token",
        json={"userId": "seam-user"},
        headers={"Authorization": f"apikey {app['api_key']}"},
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


async def test_upgrade_is_served_by_the_engine_without_compression(server: ServerProcess) -> None:
    """A client offering permessage-deflate still gets an uncompressed engine connection."""
    token = _token(server)
    async with websockets.connect(server.ws_url, compression="deflate") as ws:
        assert ws.response is not None
        assert ws.response.status_code == 101
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["id"] == 1 and reply["connect"]["client"]


async def test_both_engine_paths_upgrade(server: ServerProcess) -> None:
    """`/connection/websocket` is an alias of `/realtime/connection/websocket`."""
    url = f"ws://127.0.0.1:{server.port}/connection/websocket"
    async with websockets.connect(url) as ws:
        assert ws.response is not None and ws.response.status_code == 101


async def test_other_websocket_paths_are_refused(server: ServerProcess) -> None:
    """Only the engine's paths upgrade; anything else is a 404 at the handshake."""
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/somewhere/else"):
            pass
    assert info.value.response.status_code == 404


async def test_http_keeps_working_beside_open_websockets(server: ServerProcess) -> None:
    """HTTP and WebSocket share one port: open sockets do not disturb HTTP requests."""
    token = _token(server)
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        await asyncio.wait_for(ws.recv(), 5)
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{server.base_url}/realtime/health")
        assert r.status_code == 200 and r.json() == {}
