"""Webhook registrations: the record and the store contract. No I/O here."""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

_BASE36 = string.digits + string.ascii_lowercase


def utcnow() -> datetime:
    # Not tenancy's: the application service (in tenancy) imports this package.
    return datetime.now(UTC)


def new_webhook_id() -> str:
    """`webhook_<unix ms>_<6 random base36 chars>`, as seed 000 shows."""
    suffix = "".join(secrets.choice(_BASE36) for _ in range(6))
    return f"webhook_{int(time.time() * 1000)}_{suffix}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    id: str
    app_id: str
    url: str
    secret: str
    events: tuple[str, ...]
    enabled: bool = True
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def wants(self, event: str) -> bool:
        return self.enabled and ("*" in self.events or event in self.events)


class WebhookLimitError(Exception):
    """The app already has as many webhooks as it may have."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an app can have at most {limit} webhooks")
        self.limit = limit


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

    async def set_enabled(self, app_id: str, webhook_id: str, enabled: bool) -> bool:
        """Enable or disable the app's webhook; False if the app has no such webhook."""
