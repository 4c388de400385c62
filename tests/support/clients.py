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

    def put(self, kind: str, ctx: Any) -> None:
        self.events.put_nowait((kind, ctx))

    async def next(
        self, kind: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = DEADLINE
    ) -> Any:
        """The next event of this kind that matches; others are skipped."""

        async def find() -> Any:
            while True:
                got_kind, ctx = await self.events.get()
                if got_kind == kind and where(ctx):
                    return ctx

        return await asyncio.wait_for(find(), timeout)


class SubEvents(SubscriptionEventHandler):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

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


def make_client(server: ServerProcess, rec: Recorder, **kwargs: Any) -> Client:
    return Client(server.ws_url, events=ClientEvents(rec), **kwargs)
