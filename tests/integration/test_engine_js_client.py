"""The engine driven by the unmodified centrifuge-js client (npm `centrifuge`) under Node with
the `ws` package: connect, subscribe, publications with tags, presence, history, recovery after
reconnect, and token refresh through getToken."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import engine_api
from tests.support.server import ServerProcess

JS_DIR = Path(__file__).resolve().parents[1] / "js"
Json = dict[str, Any]

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "centrifuge").exists(),
    reason="Node or the npm packages are missing (make test installs them)",
)


class JsClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def next(
        self, event: str, where: Callable[[Json], bool] = lambda _: True, timeout: float = 10
    ) -> Json:
        async def find() -> Json:
            assert self.proc.stdout is not None
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"node exited before '{event}'")
                msg: Json = json.loads(line)
                if msg["event"] == event and where(msg):
                    return msg

        return await asyncio.wait_for(find(), timeout)

    async def send(self, cmd: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.proc.stdin.drain()


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


@pytest.fixture
async def js(server: ServerProcess) -> AsyncIterator[tuple[JsClient, Json]]:
    app = server.create_app(name="js")
    async for client in start_js(server, app):
        yield client, app


async def test_publication_presence_and_history(
    server: ServerProcess, js: tuple[JsClient, Json]
) -> None:
    client, app = js
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
    assert (await client.next("presence_stats")) | {} == {
        "event": "presence_stats",
        "clients": 1,
        "users": 1,
    }
    await client.send("history", limit=10)
    history = await client.next("history")
    assert history["data"] == [{"text": "hi"}] and history["offset"] == 1


async def test_recovery_after_reconnect(server: ServerProcess, js: tuple[JsClient, Json]) -> None:
    client, app = js
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


async def test_token_refresh_keeps_the_connection(server: ServerProcess) -> None:
    app = server.create_app(name="js-refresh")
    # Tokens signed by the app's backend with its app_secret, valid for 3 seconds each.
    env = {"XS_TTL": "3", "XS_APP_ID": str(app["app_id"]), "XS_APP_SECRET": str(app["app_secret"])}
    async for client in start_js(server, app, **env):
        await client.next("subscribed")
        await client.next("token", lambda m: m["calls"] >= 2, timeout=15)
        engine_api(server, app, "publish", {"channel": "public:js", "data": "still here"})
        assert (await client.next("publication"))["data"] == "still here"


async def test_join_and_leave_between_two_js_clients(server: ServerProcess) -> None:
    app = server.create_app(name="js-jl")
    async for first in start_js(server, app, XS_USER="first"):
        await first.next("subscribed")
        async for second in start_js(server, app, XS_USER="second"):
            await second.next("subscribed")
            assert (await first.next("join", lambda m: m["user"] == "second"))["user"] == "second"
            await second.send("exit")
            await first.next("leave", lambda m: m["user"] == "second")
