"""The WebhookStore contract (`webhooks.models.WebhookStore`), identical on SQLite and
PostgreSQL: CRUD scoped by app, and an app's webhooks deleted with it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from xshathra.storage.database import Database
from xshathra.tenancy.apps import AppIdRetiredError, generate_app
from xshathra.webhooks.models import Webhook, new_webhook_id

_T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _hook(app_id: str, *, minutes: int = 0, events: tuple[str, ...] = ("*",)) -> Webhook:
    at = _T0 + timedelta(minutes=minutes)
    return Webhook(
        id=new_webhook_id(),
        app_id=app_id,
        url=f"https://{app_id}.example.com/hook",
        secret="whsec_" + "x" * 24,
        events=events,
        created_at=at,
        updated_at=at,
    )


async def _apps(database: Database, *app_ids: str) -> None:
    for app_id in app_ids:
        await database.apps.create_app(generate_app(name=app_id, app_id=app_id)[0])


def test_webhook_ids_have_the_seed_format() -> None:
    """Ids are `webhook_<unix ms>_<6 base36 chars>`, current, and distinct."""
    ids = {new_webhook_id() for _ in range(200)}
    assert len(ids) == 200
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for webhook_id in ids:
        match = re.fullmatch(r"webhook_(\d+)_([0-9a-z]{6})", webhook_id)
        assert match is not None, webhook_id
        assert abs(int(match.group(1)) - now_ms) < 60_000


async def test_create_list_get(database: Database) -> None:
    """Webhooks come back as stored, oldest first, with tz-aware UTC timestamps."""
    await _apps(database, "wa")
    later = _hook("wa", minutes=5, events=("new-message", "user-joined"))
    earlier = _hook("wa", minutes=1)
    await database.webhooks.create_webhook(later)
    await database.webhooks.create_webhook(earlier)
    assert await database.webhooks.list_webhooks("wa") == [earlier, later]
    got = await database.webhooks.get_webhook("wa", later.id)
    assert got == later
    assert got is not None and got.events == ("new-message", "user-joined")
    assert got.created_at.utcoffset() == timedelta(0)
    assert await database.webhooks.get_webhook("wa", "webhook_0_absent") is None
    assert await database.webhooks.list_webhooks("no-such-app") == []


async def test_another_app_cannot_reach_a_webhook(database: Database) -> None:
    """App B knowing app A's webhook id can neither read, disable nor delete it."""
    await _apps(database, "wa", "wb")
    hook = _hook("wa")
    await database.webhooks.create_webhook(hook)
    assert await database.webhooks.get_webhook("wb", hook.id) is None
    assert not await database.webhooks.set_enabled("wb", hook.id, False)
    assert not await database.webhooks.delete_webhook("wb", hook.id)
    assert await database.webhooks.list_webhooks("wb") == []
    assert await database.webhooks.get_webhook("wa", hook.id) == hook


async def test_set_enabled(database: Database) -> None:
    """Disabling and re-enabling is stored and moves updated_at forward."""
    await _apps(database, "wa")
    hook = _hook("wa")
    await database.webhooks.create_webhook(hook)
    assert await database.webhooks.set_enabled("wa", hook.id, False)
    disabled = await database.webhooks.get_webhook("wa", hook.id)
    assert disabled is not None and disabled.enabled is False
    assert disabled.updated_at > hook.updated_at and disabled.created_at == hook.created_at
    assert await database.webhooks.set_enabled("wa", hook.id, True)
    enabled = await database.webhooks.get_webhook("wa", hook.id)
    assert enabled is not None and enabled.enabled is True
    assert not await database.webhooks.set_enabled("wa", "webhook_0_absent", True)


async def test_delete_webhook(database: Database) -> None:
    """delete_webhook removes that webhook only and answers whether there was one."""
    await _apps(database, "wa")
    gone, kept = _hook("wa"), _hook("wa", minutes=1)
    await database.webhooks.create_webhook(gone)
    await database.webhooks.create_webhook(kept)
    assert await database.webhooks.delete_webhook("wa", gone.id)
    assert not await database.webhooks.delete_webhook("wa", gone.id)
    assert await database.webhooks.list_webhooks("wa") == [kept]


async def test_deleting_an_app_deletes_its_webhooks(database: Database) -> None:
    """ON DELETE CASCADE holds on both backends (SQLite needs foreign_keys on per connection)."""
    await _apps(database, "wa", "wb")
    await database.webhooks.create_webhook(_hook("wa"))
    await database.webhooks.create_webhook(_hook("wa", minutes=1))
    other = _hook("wb")
    await database.webhooks.create_webhook(other)
    assert await database.apps.delete_app("wa")
    assert await database.webhooks.list_webhooks("wa") == []
    assert await database.webhooks.list_webhooks("wb") == [other]
    # The app_id is retired (M4): nothing can be created under it to inherit them.
    with pytest.raises(AppIdRetiredError):
        await _apps(database, "wa")


async def test_a_webhook_needs_an_existing_app(database: Database) -> None:
    """The foreign key refuses a webhook for an app that does not exist."""
    with pytest.raises(IntegrityError):
        await database.webhooks.create_webhook(_hook("no-such-app"))
