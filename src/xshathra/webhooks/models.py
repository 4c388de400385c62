"""Webhook registrations and deliveries: the records both the dispatcher and the stores use.
No I/O here; the store contracts are in `webhooks.store`."""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
    # Rooms (channel names) whose events it wants, as `*` globs; empty: every room. Events of
    # no room (user-online, user-offline) ignore it.
    rooms: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # sent with every delivery
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def wants(self, event: str, room: str = "") -> bool:
        """Xshathra-format events; Pusher's are matched by name only (webhooks.pusher)."""
        if not self.enabled or ("*" not in self.events and event not in self.events):
            return False
        return not self.rooms or not room or any(glob_matches(g, room) for g in self.rooms)


def glob_matches(pattern: str, name: str) -> bool:
    """`*` matches any run of characters (none included); everything else is literal. Linear
    in the lengths (the first fit of each part is the right one), so no pattern is costly."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == name
    first, last = parts[0], parts[-1]
    if not name.startswith(first) or len(name) < len(first) + len(last):
        return False
    position, end = len(first), len(name) - len(last)
    if not name.endswith(last):
        return False
    for part in parts[1:-1]:
        found = name.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookChanges:
    """What `PUT /api/webhooks/:id` changes; None: left as stored."""

    url: str | None = None
    events: tuple[str, ...] | None = None
    rooms: tuple[str, ...] | None = None
    headers: dict[str, str] | None = None
    enabled: bool | None = None


class WebhookLimitError(Exception):
    """The app already has as many webhooks as it may have."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an app can have at most {limit} webhooks")
        self.limit = limit


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


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: str
    webhook_id: str
    app_id: str
    event_id: str
    event: str
    room: str
    body: str
