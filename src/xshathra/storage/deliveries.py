"""The webhook delivery outbox in SQL: enqueue (capped per app), lease-based claiming that is
fair across apps, outcomes, history and pruning.

Claiming sets a lease (`locked_until`) in one UPDATE whose WHERE re-states "due and not
leased": SQLite serialises writers, and PostgreSQL re-checks that condition on a row another
node claimed meanwhile (READ COMMITTED re-evaluation), so concurrent nodes never attempt the same
delivery at once; a node that dies mid-attempt loses its lease and another node retries.

Due rows are claimed round-robin across apps (each app's oldest first, then each app's second,
...), at most `per_app` at a time per app, so one app's backlog or slow receivers cannot hold up
another app's deliveries.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from xshathra.storage.tables import webhook_deliveries
from xshathra.tenancy.apps import utcnow
from xshathra.webhooks.models import Delivery, NewDelivery
from xshathra.webhooks.store import DeliveryStore

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


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


class SqlDeliveryStore(DeliveryStore):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def enqueue(
        self,
        items: list[NewDelivery],
        *,
        max_pending: int | None = None,
        hold_seconds: float = 0.0,
    ) -> int:
        """Insert deliveries (all of one app) in one transaction, due after `hold_seconds`.

        Past `max_pending` pending deliveries for the app, the extra ones are stored as failed
        ("dropped") so that the loss is visible in the delivery log; returns how many were.
        """
        if not items:
            return 0
        now = utcnow()
        async with self._engine.begin() as conn:
            room = len(items)
            if max_pending is not None:
                # Bounded count: never scans more than the cap, whatever the backlog.
                pending = select(literal(1)).where(
                    webhook_deliveries.c.app_id == items[0].app_id,
                    webhook_deliveries.c.status == PENDING,
                )
                count = select(func.count()).select_from(pending.limit(max_pending).subquery())
                room = max(0, max_pending - int((await conn.execute(count)).scalar_one()))
            dropped_error = f"dropped: the app has {max_pending} pending deliveries (the limit)"
            rows = [
                {
                    "id": d.id,
                    "webhook_id": d.webhook_id,
                    "app_id": d.app_id,
                    "event_id": d.event_id,
                    "event": d.event,
                    "room": d.room,
                    "body": d.body,
                    "status": PENDING if i < room else FAILED,
                    "attempts": 0,
                    "next_attempt_at": now + timedelta(seconds=hold_seconds) if i < room else now,
                    "last_error": None if i < room else dropped_error,
                    "created_at": now,
                }
                for i, d in enumerate(items)
            ]
            await conn.execute(webhook_deliveries.insert(), rows)
        return len(items) - min(room, len(items))

    async def release(self, delivery_ids: list[str]) -> None:
        """Make held deliveries due now (their publication went out)."""
        if not delivery_ids:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id.in_(delivery_ids),
                    webhook_deliveries.c.status == PENDING,
                    webhook_deliveries.c.attempts == 0,
                    webhook_deliveries.c.locked_by.is_(None),
                )
                .values(next_attempt_at=utcnow())
            )

    async def cancel(self, delivery_ids: list[str]) -> None:
        """Remove held deliveries whose publication failed: there is no event to tell."""
        if not delivery_ids:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(webhook_deliveries).where(
                    webhook_deliveries.c.id.in_(delivery_ids),
                    webhook_deliveries.c.attempts == 0,
                    webhook_deliveries.c.locked_by.is_(None),
                )
            )

    async def prune(self, before: datetime, batch: int = 5_000) -> int:
        """Delete up to `batch` delivered or failed rows last attempted before `before`."""
        old = (
            select(webhook_deliveries.c.id)
            .where(
                webhook_deliveries.c.status.in_((DELIVERED, FAILED)),
                webhook_deliveries.c.next_attempt_at < before,
            )
            .limit(batch)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.id.in_(old.scalar_subquery()))
            )
        return int(result.rowcount or 0)

    async def claim_due(
        self,
        node_id: str,
        limit: int,
        lease_seconds: float,
        *,
        per_app: int | None = None,
        busy: Mapping[str, int] | None = None,
    ) -> list[Delivery]:
        """Lease up to `limit` due deliveries, round-robin across apps; an app gets at most
        `per_app` minus what this node already has in flight for it (`busy`)."""
        now = utcnow()
        t = webhook_deliveries
        due = (
            t.c.status == PENDING,
            t.c.next_attempt_at <= now,
            or_(t.c.locked_until.is_(None), t.c.locked_until < now),
        )
        rank = func.row_number().over(
            partition_by=t.c.app_id, order_by=(t.c.next_attempt_at, t.c.id)
        )
        ranked = select(t.c.id, t.c.app_id, t.c.next_attempt_at, rank.label("rank")).where(*due)
        ranked_q = ranked.subquery()
        pick = select(ranked_q.c.id)
        if per_app is not None:
            allowance: ColumnElement[Any] = literal(per_app)
            if busy:
                allowance = case(
                    {app: per_app - n for app, n in busy.items()},
                    value=ranked_q.c.app_id,
                    else_=per_app,
                )
            pick = pick.where(ranked_q.c.rank <= allowance)
        pick = pick.order_by(ranked_q.c.rank, ranked_q.c.next_attempt_at).limit(limit)
        claim = (
            update(t)
            .where(t.c.id.in_(pick.scalar_subquery()), *due)
            .values(locked_by=node_id, locked_until=now + timedelta(seconds=lease_seconds))
            .returning(*t.c)
        )
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

    async def record_attempt(
        self, item: NewDelivery, status_code: int | None, error: str | None
    ) -> None:
        now = utcnow()
        delivered = status_code is not None and 200 <= status_code < 300
        async with self._engine.begin() as conn:
            await conn.execute(
                webhook_deliveries.insert(),
                {
                    "id": item.id,
                    "webhook_id": item.webhook_id,
                    "app_id": item.app_id,
                    "event_id": item.event_id,
                    "event": item.event,
                    "room": item.room,
                    "body": item.body,
                    "status": DELIVERED if delivered else FAILED,
                    "attempts": 1,
                    "next_attempt_at": now,
                    "last_status": status_code,
                    "last_error": None if delivered else (error or f"HTTP {status_code}")[:500],
                    "created_at": now,
                    "delivered_at": now if delivered else None,
                },
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
