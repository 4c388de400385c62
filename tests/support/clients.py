"""Helpers for driving the engine with the real client SDKs: tokens, event queues, deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import jwt
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    ConnectingContext,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ServerPublicationContext,
    ServerSubscribedContext,
    ServerUnsubscribedContext,
    SubscribedContext,
    SubscribingContext,
    SubscriptionErrorContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from tests.support.server import ServerProcess

Json = dict[str, Any]
T = TypeVar("T")
DEADLINE = 5.0


def realtime_token(
    server: ServerProcess,
    app: Json,
    user: str,
    *,
    channels: list[str] | None = None,
    ttl: int = 900,
) -> str:
    body: Json = {"userId": user, "ttlSeconds": ttl}
    if channels:
        body["channels"] = channels
    r = httpx.post(
        f"{server.base_url}/api/realtime/token",
        json=body,
        headers={"Authorization": f"apikey {app['api_key']}"},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def subscription_token(server: ServerProcess, app: Json, user: str, channel: str) -> str:
    r = httpx.post(
        f"{server.base_url}/api/realtime/subscription-token",
        json={"userId": user, "channel": channel},
        headers={"Authorization": f"apikey {app['api_key']}"},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def app_signed_token(app: Json, user: str, *, expires_in: int = 600, **claims: Any) -> str:
    """A token the app's own backend signs with its app_secret (no round trip to us)."""
    now = int(time.time())
    payload = {"sub": user, "app_id": app["app_id"], "iat": now, "exp": now + expires_in, **claims}
    return jwt.encode(payload, str(app["app_secret"]), algorithm="HS256")


def engine_api(server: ServerProcess, app: Json, method: str, body: Json) -> Json:
    r = httpx.post(
        f"{server.base_url}/realtime/api/{method}",
        json=body,
        headers={"X-API-Key": str(app["api_key"])},
    )
    assert r.status_code == 200, r.text
    result: Json = r.json()
    return result


class Recorder:
    """Queues every event a client or subscription emits, to be awaited under a deadline."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.log: list[tuple[str, Any]] = []  # every event ever recorded, consumed or not

    def put(self, kind: str, ctx: Any) -> None:
        self.events.put_nowait((kind, ctx))
        self.log.append((kind, ctx))

    def kinds(self, *kinds: str) -> list[tuple[str, Any]]:
        """Every event of these kinds recorded so far, in order."""
        return [(k, ctx) for k, ctx in self.log if k in kinds]

    async def next(
        self, kind: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = DEADLINE
    ) -> Any:
        """The next event of this kind that matches; others are skipped."""

        async def find() -> Any:
            while True:
                got_kind, ctx = await self.events.get()
                if got_kind == kind and where(ctx):
                    return ctx

        try:
            return await asyncio.wait_for(find(), timeout)
        except TimeoutError:
            recent = [f"{k}: {c}" for k, c in self.log[-8:]]
            message = f"no matching {kind} within {timeout} s; last events: {recent}"
            raise TimeoutError(message) from None


class SubEvents(SubscriptionEventHandler):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        self.rec.put("subscribing", ctx)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.rec.put("subscribed", ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.rec.put("unsubscribed", ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.rec.put("publication", ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        self.rec.put("join", ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.rec.put("leave", ctx)

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        self.rec.put("error", ctx)


class ClientEvents(ClientEventHandler):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.rec.put("connecting", ctx)

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.rec.put("connected", ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.rec.put("disconnected", ctx)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.rec.put("server_subscribed", ctx)

    async def on_unsubscribed(self, ctx: ServerUnsubscribedContext) -> None:
        self.rec.put("server_unsubscribed", ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.rec.put("server_publication", ctx)


def make_client(
    server: ServerProcess, rec: Recorder, *, url: str | None = None, **kwargs: Any
) -> Client:
    """A centrifuge-python client whose events go to `rec` (through a proxy when `url` is set)."""
    return Client(url or server.ws_url, events=ClientEvents(rec), **kwargs)


class TcpProxy:
    """A TCP relay between a client and the server, to cut the network under a live connection.

    `drop()` aborts every relayed connection at once (no close frame: what a lost link looks
    like to both sides); `hold()` makes new connections wait before they reach the server,
    until `release()`, so a test can act while the client is certainly away.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._links: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/connection/websocket"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._open.set()
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def drop(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._links.add(writer)
        await self._open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links.discard(writer)
        self._links.discard(up_writer)
