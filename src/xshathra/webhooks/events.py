"""Turns channel events into durable webhook deliveries (the transactional outbox).

`emit` writes one delivery row per matching webhook before it returns, so whoever awaits it
(a publish being acknowledged) knows the event is safely queued. Webhook lists are cached per
app and invalidated when they change.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

import msgspec

from xshathra.engine.channels import ChannelRef
from xshathra.storage.deliveries import NewDelivery
from xshathra.webhooks.models import Webhook

if TYPE_CHECKING:
    from xshathra.storage.database import Database
    from xshathra.webhooks.dispatcher import WebhookDispatcher

CACHE_SECONDS = 30.0


class WebhookBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The JSON every receiver gets (SPEC §5)."""

    id: str
    app_id: str
    event: str
    room: str
    data: msgspec.Raw
    user_id: str | None = None
    timestamp: int


_encoder = msgspec.json.Encoder()


class WebhookEvents:
    def __init__(self, db: Database, dispatcher: WebhookDispatcher | None = None) -> None:
        self._db = db
        self._dispatcher = dispatcher
        self._cache: dict[str, tuple[float, list[Webhook]]] = {}

    def invalidate(self, app_id: str) -> None:
        self._cache.pop(app_id, None)

    async def _webhooks(self, app_id: str) -> list[Webhook]:
        now = time.monotonic()
        cached = self._cache.get(app_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        hooks = [h for h in await self._db.webhooks.list_webhooks(app_id) if h.enabled]
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[app_id] = (now + CACHE_SECONDS, hooks)
        return hooks

    async def emit(self, ref: ChannelRef, event: str, data: bytes, user_id: str | None) -> None:
        """Queue the event for every webhook of the app that wants it."""
        hooks = [h for h in await self._webhooks(ref.app_id) if h.wants(event)]
        if not hooks:
            return
        event_id = "evt_" + secrets.token_hex(12)
        body = _encoder.encode(
            WebhookBody(
                id=event_id,
                app_id=ref.app_id,
                event=event,
                room=ref.name,
                data=msgspec.Raw(data),
                user_id=user_id or None,
                timestamp=int(time.time() * 1000),
            )
        ).decode()
        await self._db.deliveries.enqueue(
            [
                NewDelivery(
                    id="dlv_" + secrets.token_hex(12),
                    webhook_id=h.id,
                    app_id=ref.app_id,
                    event_id=event_id,
                    event=event,
                    room=ref.name,
                    body=body,
                )
                for h in hooks
            ]
        )
        if self._dispatcher is not None:
            self._dispatcher.wake()

    # --- what the engine calls ----------------------------------------------------------------

    async def publication(
        self, ref: ChannelRef, tags: dict[str, str] | None, data: bytes, user: str | None
    ) -> None:
        event = (tags or {}).get("event") or "publication"
        await self.emit(ref, event, data, user)

    async def lifecycle(self, ref: ChannelRef, event: str, user: str, client: str) -> None:
        data = _encoder.encode({"channel": ref.name, "client": client} if client else {})
        await self.emit(ref, event, data, user or None)
