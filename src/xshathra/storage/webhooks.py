"""Webhook registrations in SQL: `SqlWebhookStore` implements `webhooks.store.WebhookStore`."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from xshathra.storage.tables import applications, webhooks
from xshathra.tenancy.apps import utcnow
from xshathra.webhooks.models import Webhook, WebhookChanges, WebhookLimitError
from xshathra.webhooks.store import WebhookStore

_events_decoder = msgspec.json.Decoder(list[str])
_headers_decoder = msgspec.json.Decoder(dict[str, str])


def _webhook(row: Any) -> Webhook:
    return Webhook(
        id=row.id,
        app_id=row.app_id,
        url=row.url,
        secret=row.secret,
        events=tuple(_events_decoder.decode(row.events)),
        rooms=tuple(_events_decoder.decode(row.rooms)),
        headers=_headers_decoder.decode(row.headers),
        enabled=bool(row.enabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlWebhookStore(WebhookStore):
    """`WebhookStore` in the `webhooks` table. Every query names the app, so one app can never
    read or change another app's webhook even when it knows the id."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_webhook(self, webhook: Webhook, *, max_per_app: int | None = None) -> None:
        values = {
            "id": webhook.id,
            "app_id": webhook.app_id,
            "url": webhook.url,
            "secret": webhook.secret,
            "events": msgspec.json.encode(list(webhook.events)).decode(),
            "rooms": msgspec.json.encode(list(webhook.rooms)).decode(),
            "headers": msgspec.json.encode(webhook.headers).decode(),
            "enabled": webhook.enabled,
            "created_at": webhook.created_at,
            "updated_at": webhook.updated_at,
        }
        async with self._engine.begin() as conn:
            if max_per_app is None:
                await conn.execute(webhooks.insert().values(**values))
                return
            if conn.dialect.name == "postgresql":
                # Serialise creations for this app, so two at once cannot both pass the count.
                await conn.execute(
                    select(applications.c.app_id)
                    .where(applications.c.app_id == webhook.app_id)
                    .with_for_update()
                )
            # One statement: the count and the insert are atomic under SQLite's write lock.
            count = (
                select(func.count())
                .select_from(webhooks)
                .where(webhooks.c.app_id == webhook.app_id)
                .scalar_subquery()
            )
            insert = webhooks.insert().from_select(
                list(values),
                select(*(literal(v, webhooks.c[k].type).label(k) for k, v in values.items())).where(
                    count < max_per_app
                ),
            )
            if (await conn.execute(insert)).rowcount == 0:
                raise WebhookLimitError(max_per_app)

    async def list_webhooks(self, app_id: str) -> list[Webhook]:
        query = (
            select(webhooks)
            .where(webhooks.c.app_id == app_id)
            .order_by(webhooks.c.created_at, webhooks.c.id)
        )
        async with self._engine.connect() as conn:
            return [_webhook(r) for r in (await conn.execute(query)).all()]

    async def get_webhook(self, app_id: str, webhook_id: str) -> Webhook | None:
        query = select(webhooks).where(webhooks.c.app_id == app_id, webhooks.c.id == webhook_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _webhook(row) if row is not None else None

    async def delete_webhook(self, app_id: str, webhook_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(webhooks).where(webhooks.c.app_id == app_id, webhooks.c.id == webhook_id)
            )
        return bool(result.rowcount)

    async def update_webhook(
        self, app_id: str, webhook_id: str, changes: WebhookChanges
    ) -> Webhook | None:
        values: dict[str, Any] = {"updated_at": utcnow()}
        if changes.url is not None:
            values["url"] = changes.url
        if changes.events is not None:
            values["events"] = msgspec.json.encode(list(changes.events)).decode()
        if changes.rooms is not None:
            values["rooms"] = msgspec.json.encode(list(changes.rooms)).decode()
        if changes.headers is not None:
            values["headers"] = msgspec.json.encode(changes.headers).decode()
        if changes.enabled is not None:
            values["enabled"] = changes.enabled
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    update(webhooks)
                    .where(webhooks.c.app_id == app_id, webhooks.c.id == webhook_id)
                    .values(**values)
                    .returning(webhooks)
                )
            ).first()
        return _webhook(row) if row is not None else None

    async def set_enabled(self, app_id: str, webhook_id: str, enabled: bool) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(webhooks)
                .where(webhooks.c.app_id == app_id, webhooks.c.id == webhook_id)
                .values(enabled=enabled, updated_at=utcnow())
            )
        return bool(result.rowcount)
