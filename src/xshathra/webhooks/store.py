"""The storage contracts of webhooks: registrations (`WebhookStore`) and the delivery outbox
(`DeliveryStore`). SQL implementations live in `storage/`; nothing here performs I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from xshathra.webhooks.models import Delivery, NewDelivery, Webhook, WebhookChanges


class WebhookStore(Protocol):
    """Webhook registrations, always addressed through their app: a webhook id alone reaches
    nothing, so one app can never read or change another app's webhook."""

    async def create_webhook(self, webhook: Webhook, *, max_per_app: int | None = None) -> None:
        """Insert a new webhook; its app must exist. Deleting the app deletes its webhooks.
        Raises `WebhookLimitError` if the app has `max_per_app` already (checked atomically)."""

    async def list_webhooks(self, app_id: str) -> list[Webhook]:
        """The app's webhooks, oldest first."""

    async def get_webhook(self, app_id: str, webhook_id: str) -> Webhook | None:
        """The webhook if it exists and belongs to `app_id`, else None."""

    async def delete_webhook(self, app_id: str, webhook_id: str) -> bool:
        """Delete the app's webhook; False if the app has no such webhook."""

    async def update_webhook(
        self, app_id: str, webhook_id: str, changes: WebhookChanges
    ) -> Webhook | None:
        """Write the fields `changes` sets; the webhook afterwards, or None if the app has no
        such webhook."""

    async def set_enabled(self, app_id: str, webhook_id: str, enabled: bool) -> bool:
        """Enable or disable the app's webhook; False if the app has no such webhook."""


class DeliveryStore(Protocol):
    """The outbox of webhook deliveries, shared by every node. A claimed delivery is leased to
    one node until its lease runs out, so no two nodes attempt it at once; a node that dies
    mid-attempt loses its lease and another node retries (delivery is at least once)."""

    async def enqueue(
        self,
        items: list[NewDelivery],
        *,
        max_pending: int | None = None,
        hold_seconds: float = 0.0,
    ) -> int:
        """Insert deliveries (all of one app) atomically, due after `hold_seconds`. Past
        `max_pending` pending deliveries for the app, the extra ones are stored as failed
        ("dropped"); returns how many were."""

    async def release(self, delivery_ids: list[str]) -> None:
        """Make held deliveries due now (their publication went out)."""

    async def cancel(self, delivery_ids: list[str]) -> None:
        """Remove held deliveries whose publication failed: there is no event to tell."""

    async def prune(self, before: datetime, batch: int = 5_000) -> int:
        """Delete up to `batch` finished deliveries last attempted before `before`; how many."""

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

    async def mark_delivered(
        self, delivery_id: str, node_id: str, attempts: int, status_code: int
    ) -> None: ...

    async def mark_retry(
        self,
        delivery_id: str,
        node_id: str,
        attempts: int,
        delay_seconds: float,
        status_code: int | None,
        error: str,
    ) -> None: ...

    async def mark_failed(
        self, delivery_id: str, node_id: str, attempts: int, status_code: int | None, error: str
    ) -> None: ...

    async def record_attempt(
        self, item: NewDelivery, status_code: int | None, error: str | None
    ) -> None:
        """Store a delivery already attempted once outside the outbox (a test event sent at
        once): delivered on a 2xx, else failed; never claimed or retried."""

    async def list_for_webhook(self, webhook_id: str, limit: int = 100) -> list[Delivery]:
        """The webhook's deliveries, newest first."""

    async def replay(self, webhook_id: str, delivery_id: str) -> bool:
        """Queue a delivery again, now, with a fresh attempt budget; False if there is none."""


class WebhookStores(Protocol):
    """What the dispatcher and the event writer read and write (the opened database)."""

    @property
    def webhooks(self) -> WebhookStore: ...

    @property
    def deliveries(self) -> DeliveryStore: ...
