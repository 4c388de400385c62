"""Webhook registrations: the record and the store contract. No I/O here."""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from xshathra.tenancy.apps import utcnow

_BASE36 = string.digits + string.ascii_lowercase


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


class WebhookStore(Protocol):
    async def create_webhook(self, webhook: Webhook) -> None: ...

    async def list_webhooks(self, app_id: str) -> list[Webhook]: ...

    async def get_webhook(self, app_id: str, webhook_id: str) -> Webhook | None: ...

    async def delete_webhook(self, app_id: str, webhook_id: str) -> bool: ...

    async def set_enabled(self, app_id: str, webhook_id: str, enabled: bool) -> bool: ...
