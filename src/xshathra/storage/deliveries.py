"""The webhook delivery outbox in SQL: enqueue, lease-based claiming, outcomes, history.

Claiming sets a lease (`locked_until`) in one statement (with `FOR UPDATE SKIP LOCKED` on
PostgreSQL; SQLite serialises writers), so concurrent nodes never attempt the same delivery
at once; a node that dies mid-attempt loses its lease and another node retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from xshathra.storage.tables import webhook_deliveries
from xshathra.tenancy.apps import utcnow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    id: str
    webhook_id: str
    app_id: str
    event_id: str
    event: str
    room: str
    body: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        webhook_id=row.webhook_id,
        app_id=row.app_id,
        event_id=row.event_id,
        event=row.event,
        room=row.room,
        body=row.body,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_status=row.last_status,
        last_error=row.last_error,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: str
    webhook_id: str
    app_id: str
    event_id: str
    event: str
    room: str
    body: str


class SqlDeliveryStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def enqueue(self, items: list[NewDelivery]) -> None:
        """Insert deliveries in one transaction; they are due at once."""
        if not items:
            return
        now = utcnow()
        rows = [
            {
                "id": d.id,
                "webhook_id": d.webhook_id,
                "app_id": d.app_id,
                "event_id": d.event_id,
                "event": d.event,
                "room": d.room,
                "body": d.body,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for d in items
        ]
        async with self._engine.begin() as conn:
            await conn.execute(webhook_deliveries.insert(), rows)

    async def claim_due(self, node_id: str, limit: int, lease_seconds: float) -> list[Delivery]:
        now = utcnow()
        due = (
            select(webhook_deliveries.c.id)
            .where(
                webhook_deliveries.c.status == PENDING,
                webhook_deliveries.c.next_attempt_at <= now,
                or_(
                    webhook_deliveries.c.locked_until.is_(None),
                    webhook_deliveries.c.locked_until < now,
                ),
            )
            .order_by(webhook_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        if self._engine.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        claim = (
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id.in_(due.scalar_subquery()))
            .values(locked_by=node_id, locked_until=now + timedelta(seconds=lease_seconds))
            .returning(*webhook_deliveries.c)
        )
        # One statement: on SQLite it runs under the database's single write lock, so two
        # processes never claim the same rows either.
        async with self._engine.begin() as conn:
            rows = (await conn.execute(claim)).all()
        return [_delivery(r) for r in rows]

    async def _finish(self, delivery_id: str, node_id: str, **values: Any) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(webhook_deliveries)
                .where(
                    and_(
                        webhook_deliveries.c.id == delivery_id,
                        webhook_deliveries.c.locked_by == node_id,
                    )
                )
                .values(locked_by=None, locked_until=None, **values)
            )

    async def mark_delivered(
        self, delivery_id: str, node_id: str, attempts: int, status_code: int
    ) -> None:
        await self._finish(
            delivery_id,
            node_id,
            status=DELIVERED,
            attempts=attempts,
            last_status=status_code,
            last_error=None,
            delivered_at=utcnow(),
        )

    async def mark_retry(
        self,
        delivery_id: str,
        node_id: str,
        attempts: int,
        delay_seconds: float,
        status_code: int | None,
        error: str,
    ) -> None:
        await self._finish(
            delivery_id,
            node_id,
            attempts=attempts,
            next_attempt_at=utcnow() + timedelta(seconds=delay_seconds),
            last_status=status_code,
            last_error=error[:500],
        )

    async def mark_failed(
        self, delivery_id: str, node_id: str, attempts: int, status_code: int | None, error: str
    ) -> None:
        await self._finish(
            delivery_id,
            node_id,
            status=FAILED,
            attempts=attempts,
            last_status=status_code,
            last_error=error[:500],
        )

    async def list_for_webhook(self, webhook_id: str, limit: int = 100) -> list[Delivery]:
        query = (
            select(webhook_deliveries)
            .where(webhook_deliveries.c.webhook_id == webhook_id)
            .order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_delivery(r) for r in (await conn.execute(query)).all()]

    async def replay(self, webhook_id: str, delivery_id: str) -> bool:
        """Queue a delivery again, now, with a fresh attempt budget."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.webhook_id == webhook_id,
                )
                .values(
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=utcnow(),
                    locked_by=None,
                    locked_until=None,
                    delivered_at=None,
                )
            )
        return bool(result.rowcount)
