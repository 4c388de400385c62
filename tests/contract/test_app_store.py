"""The AppStore contract (`tenancy.apps.AppStore`), identical on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError

from xshathra.model import AppId
from xshathra.storage.database import Database
from xshathra.tenancy.apps import (
    AppExistsError,
    AppIdRetiredError,
    Application,
    NamespaceOptions,
    generate_app,
    hash_key,
    new_api_key,
)
from xshathra.tenancy.proxies import NO_PROXIES, parse_proxy_config


def _app(app_id: str, **changes: object) -> Application:
    app, _ = generate_app(name=f"app {app_id}", app_id=app_id)
    return replace(app, **changes)  # type: ignore[arg-type]


async def test_every_field_round_trips(database: Database) -> None:
    """An app comes back equal to what was stored, namespaces and optional fields included."""
    app = _app(
        "shop",
        allowed_domain="example.com",
        rate_limit=60,
        status=False,
        owner_id="user_1",
        namespaces={
            "chat": NamespaceOptions(
                presence=True, join_leave=True, history_size=5, history_ttl=30
            ),
            "": NamespaceOptions(allow_subscribe_for_client=True),
        },
    )
    await database.apps.create_app(app)
    got = await database.apps.get_app("shop")
    assert got == app
    assert got is not None and isinstance(got.namespaces["chat"], NamespaceOptions)
    assert await database.apps.get_app("absent") is None


async def test_timestamps_come_back_as_aware_utc(database: Database) -> None:
    """A timestamp given in any zone comes back as the same instant, tz-aware, in UTC."""
    kolkata = timezone(timedelta(hours=5, minutes=30))
    created = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=kolkata)
    await database.apps.create_app(_app("tz", created_at=created, updated_at=created))
    got = await database.apps.get_app("tz")
    assert got is not None
    for moment in (got.created_at, got.updated_at):
        assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
        assert moment == created and moment.microsecond == 123456
    assert got.created_at.replace(tzinfo=None) == datetime(2024, 5, 6, 1, 38, 9, 123456)


async def test_duplicate_app_id_is_refused(database: Database) -> None:
    """A second app with a taken app_id raises AppExistsError and the first is kept."""
    first = _app("dup")
    await database.apps.create_app(first)
    with pytest.raises(AppExistsError):
        await database.apps.create_app(_app("dup", name="intruder"))
    assert await database.apps.get_app("dup") == first


async def test_api_key_hash_is_unique_without_posing_as_a_taken_app_id(database: Database) -> None:
    """Two apps can never share an API key; that clash is not reported as 'app exists'."""
    first = _app("k1")
    await database.apps.create_app(first)
    with pytest.raises(IntegrityError):
        await database.apps.create_app(_app("k2", api_key_hash=first.api_key_hash))
    assert await database.apps.get_app("k2") is None


async def test_lookup_by_api_key_hash(database: Database) -> None:
    """The app is found by the hash of its key, and no other key finds it."""
    app, keys = generate_app(name="keyed", app_id="keyed")
    await database.apps.create_app(app)
    await database.apps.create_app(_app("other"))
    assert await database.apps.find_by_api_key_hash(hash_key(keys.api_key)) == app
    assert await database.apps.find_by_api_key_hash(hash_key("not-a-key")) is None


async def test_list_is_ordered_by_creation_and_filters_by_owner(database: Database) -> None:
    """list_apps orders by created_at (not by id) and can keep one owner's apps."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    await database.apps.create_app(_app("b", created_at=start, owner_id="alice"))
    await database.apps.create_app(_app("a", created_at=start + timedelta(seconds=1)))
    await database.apps.create_app(
        _app("c", created_at=start + timedelta(seconds=2), owner_id="alice")
    )
    assert [a.app_id for a in await database.apps.list_apps()] == ["b", "a", "c"]
    assert [a.app_id for a in await database.apps.list_apps(owner_id="alice")] == ["b", "c"]
    assert await database.apps.list_apps(owner_id="nobody") == []


async def test_update_sets_only_the_given_fields(database: Database) -> None:
    """update_app writes the fields it is given (None clears allowed_domain) and keeps the
    others, the key included; it answers the row as stored."""
    original = _app(
        "upd",
        allowed_domain="example.com",
        namespaces={"chat": NamespaceOptions(presence=True)},
    )
    await database.apps.create_app(original)
    got = await database.apps.update_app(
        "upd", {"name": "renamed", "allowed_domain": None, "namespaces": {}, "rate_limit": 5}
    )
    assert got is not None and got == await database.apps.get_app("upd")
    assert (got.name, got.allowed_domain, got.namespaces, got.rate_limit) == (
        "renamed",
        None,
        {},
        5,
    )
    assert got.api_key_hash == original.api_key_hash and got.status is True
    assert got.created_at == original.created_at and got.updated_at >= original.updated_at
    status_only = await database.apps.update_app("upd", {"status": False})
    assert status_only is not None and status_only.name == "renamed" and not status_only.status


async def test_a_stale_key_or_a_disabled_app_changes_nothing(database: Database) -> None:
    """With while_key, an update or a key change applies only while that key is the app's
    and the app is enabled (H2: a regeneration or a suspension always wins)."""
    app, keys = generate_app(name="guarded", app_id="guarded")
    await database.apps.create_app(app)
    old = keys.api_key_hash
    regenerated = await database.apps.set_api_key("guarded", new_api_key())
    assert regenerated is not None and regenerated.api_key_hash != old
    assert await database.apps.update_app("guarded", {"name": "x"}, while_key=old) is None
    assert await database.apps.set_api_key("guarded", new_api_key(), while_key=old) is None
    assert await database.apps.get_app("guarded") == regenerated
    current = regenerated.api_key_hash
    assert await database.apps.update_app("guarded", {"status": False}, while_key=current)
    assert await database.apps.update_app("guarded", {"status": True}, while_key=current) is None
    stored = await database.apps.get_app("guarded")
    assert stored is not None and stored.status is False
    assert await database.apps.update_app("guarded", {"status": True}) is not None


async def test_update_of_an_unknown_app_creates_nothing(database: Database) -> None:
    """update_app and set_api_key answer None for an app that does not exist."""
    assert await database.apps.update_app("ghost", {"name": "boo"}) is None
    assert await database.apps.set_api_key("ghost", new_api_key()) is None
    assert await database.apps.get_app(AppId("ghost")) is None


async def test_delete(database: Database) -> None:
    """delete_app removes only that app and answers whether there was one."""
    await database.apps.create_app(_app("gone"))
    kept = _app("kept")
    await database.apps.create_app(kept)
    assert await database.apps.delete_app("gone")
    assert not await database.apps.delete_app("gone")
    assert await database.apps.get_app("gone") is None
    assert await database.apps.list_apps() == [kept]


async def test_a_deleted_app_id_is_never_reused(database: Database) -> None:
    """M4: after delete_app the app_id is retired: creating it again raises AppIdRetiredError
    (an AppExistsError), whatever the new record holds."""
    await database.apps.create_app(_app("once"))
    assert await database.apps.delete_app("once")
    with pytest.raises(AppIdRetiredError):
        await database.apps.create_app(_app("once", name="newcomer"))
    assert await database.apps.get_app("once") is None
    assert not await database.apps.delete_app("once")


async def test_delete_purges_what_sql_holds_for_the_app(database: Database) -> None:
    """M4: deleting an app removes its webhooks, their deliveries and its analytics rows, and
    leaves another app's untouched."""
    from sqlalchemy import func, select

    from xshathra.storage.tables import (
        analytics_counts,
        analytics_online,
        analytics_users,
        webhook_deliveries,
        webhooks,
    )
    from xshathra.webhooks.models import NewDelivery, Webhook, new_webhook_id

    tables = (webhooks, webhook_deliveries, analytics_counts, analytics_users, analytics_online)
    for app_id in ("purged", "bystander"):
        await database.apps.create_app(_app(app_id))
        hook = Webhook(
            id=new_webhook_id(),
            app_id=app_id,
            url="https://x.example/h",
            secret="s" * 12,
            events=("*",),
        )
        await database.webhooks.create_webhook(hook)
        await database.deliveries.enqueue(
            [NewDelivery(f"dlv_{app_id}", hook.id, app_id, "evt_1", "news", "room", "{}")]
        )
        await database.analytics.flush(
            {(app_id, 60): [1, 2, 3]},
            {(app_id, 3600, "u")},
            f"node-{app_id}",
            {app_id: (1, ["u"])},
            60,
        )

    async def rows(app_id: str) -> list[int]:
        async with database.engine.connect() as conn:
            return [
                (await conn.execute(select(func.count()).where(t.c.app_id == app_id))).scalar_one()
                for t in tables
            ]

    assert await rows("purged") == [1] * len(tables)
    assert await database.apps.delete_app("purged")
    assert await rows("purged") == [0] * len(tables)
    assert await rows("bystander") == [1] * len(tables)


async def test_history_options_stored_before_their_bounds_are_read_clamped(
    database: Database,
) -> None:
    """A row written before history_size/history_ttl had upper bounds (issue 11, M9) still
    loads: the out-of-range values come back at the bounds instead of making the app
    unreadable."""
    from sqlalchemy import update

    from xshathra.storage.tables import applications
    from xshathra.tenancy.apps import MAX_HISTORY_SIZE, MAX_HISTORY_TTL

    await database.apps.create_app(_app("veteran"))
    stored = (
        '{"chat": {"history_size": 50000, "history_ttl": 100000000000000000000,'
        ' "presence": true}, "": {}}'
    )
    async with database.engine.begin() as conn:
        await conn.execute(
            update(applications).where(applications.c.app_id == "veteran").values(namespaces=stored)
        )
    got = await database.apps.get_app("veteran")
    assert got is not None
    chat = got.namespaces["chat"]
    assert (chat.history_size, chat.history_ttl, chat.presence) == (
        MAX_HISTORY_SIZE,
        MAX_HISTORY_TTL,
        True,
    )


async def test_proxies_round_trip_and_clear(database: Database) -> None:
    """An app's proxy configuration is stored and read back equal; setting none clears it."""
    config = parse_proxy_config(
        {
            "proxies": [{"name": "auth", "endpoint": "https://backend/p", "timeout": "500ms"}],
            "client": {"proxy": {"connect": {"enabled": True, "proxy_name": "auth"}}},
            "rpc": {"namespaces": [{"name": "calc", "proxy_enabled": True, "proxy_name": "auth"}]},
        }
    )
    app = _app("proxied", proxies=config)
    await database.apps.create_app(app)
    stored = await database.apps.get_app("proxied")
    assert stored is not None and stored.proxies == config
    updated = await database.apps.update_app("proxied", {"proxies": NO_PROXIES})
    assert updated is not None and updated.proxies == NO_PROXIES


async def test_lookup_by_client_key(database: Database) -> None:
    """A client connecting without a token names its app by the public client key."""
    app = _app("by-client-key")
    await database.apps.create_app(app)
    found = await database.apps.find_by_client_key(app.client_api_key)
    assert found is not None and found.app_id == "by-client-key"
    assert await database.apps.find_by_client_key("xc_unknown") is None
