"""The storage contract (AppStore, WebhookStore, ServerStateStore, migrations), identical on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC

import pytest

from tests.support.services import postgres_database
from xshathra.storage.database import Database, open_database
from xshathra.tenancy.apps import (
    AppExistsError,
    NamespaceOptions,
    generate_app,
    hash_key,
    regenerate_api_key,
)
from xshathra.webhooks.models import Webhook, new_webhook_id


async def test_app_round_trip(database: Database) -> None:
    """Every field, namespaces included, comes back as stored, with UTC-aware timestamps."""
    app, keys = generate_app(
        name="Shop", app_id="shop", allowed_domain="example.com", rate_limit=60
    )
    app = replace(
        app, namespaces={"chat": NamespaceOptions(presence=True, history_size=5, history_ttl=30)}
    )
    await database.apps.create_app(app)
    got = await database.apps.get_app("shop")
    assert got == app
    assert got is not None and got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == UTC.utcoffset(None)
    assert await database.apps.find_by_api_key_hash(hash_key(keys.api_key)) == app
    assert await database.apps.find_by_api_key_hash(hash_key("other")) is None


async def test_duplicate_app_id(database: Database) -> None:
    app, _ = generate_app(name="a", app_id="dup")
    await database.apps.create_app(app)
    with pytest.raises(AppExistsError):
        await database.apps.create_app(generate_app(name="b", app_id="dup")[0])


async def test_list_update_delete(database: Database) -> None:
    first, _ = generate_app(name="first", app_id="a1", owner_id="owner")
    second, _ = generate_app(name="second", app_id="a2")
    await database.apps.create_app(first)
    await database.apps.create_app(second)
    assert [a.app_id for a in await database.apps.list_apps()] == ["a1", "a2"]
    assert [a.app_id for a in await database.apps.list_apps(owner_id="owner")] == ["a1"]
    renamed, keys = regenerate_api_key(first.with_changes(name="renamed", status=False))
    assert await database.apps.update_app(renamed)
    got = await database.apps.get_app("a1")
    assert got is not None and got.name == "renamed" and got.status is False
    assert await database.apps.find_by_api_key_hash(first.api_key_hash) is None
    assert await database.apps.find_by_api_key_hash(hash_key(keys.api_key)) is not None
    assert not await database.apps.update_app(generate_app(name="x", app_id="ghost")[0])
    assert await database.apps.delete_app("a1")
    assert not await database.apps.delete_app("a1")
    assert await database.apps.get_app("a1") is None


async def test_webhooks_are_scoped_and_cascade(database: Database) -> None:
    a, _ = generate_app(name="a", app_id="wa")
    b, _ = generate_app(name="b", app_id="wb")
    await database.apps.create_app(a)
    await database.apps.create_app(b)
    hook = Webhook(
        id=new_webhook_id(),
        app_id="wa",
        url="https://example.com/h",
        secret="s" * 16,
        events=("new-message", "*"),
    )
    await database.webhooks.create_webhook(hook)
    assert await database.webhooks.list_webhooks("wa") == [hook]
    assert await database.webhooks.get_webhook("wb", hook.id) is None
    assert not await database.webhooks.delete_webhook("wb", hook.id)
    assert await database.webhooks.set_enabled("wa", hook.id, False)
    got = await database.webhooks.get_webhook("wa", hook.id)
    assert got is not None and got.enabled is False
    await database.apps.delete_app("wa")
    assert await database.webhooks.list_webhooks("wa") == []


async def test_server_state_first_writer_wins(database: Database) -> None:
    values = await asyncio.gather(
        *(database.server_state.get_or_create("secret", f"v{i}") for i in range(5))
    )
    assert len(set(values)) == 1
    assert await database.server_state.get("secret") == values[0]
    assert await database.server_state.get("absent") is None


async def test_ping(database: Database) -> None:
    await database.ping()


async def test_reopening_is_a_no_op(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "again.db"
    first = await open_database(f"sqlite:///{path}")
    app, _ = generate_app(name="kept", app_id="kept")
    await first.apps.create_app(app)
    await first.close()
    second = await open_database(f"sqlite:///{path}")
    assert await second.apps.get_app("kept") == app
    await second.close()


async def test_two_nodes_migrate_one_postgres_database_at_once() -> None:
    with postgres_database() as url:
        dbs = await asyncio.gather(open_database(url), open_database(url), open_database(url))
        app, _ = generate_app(name="x", app_id="shared")
        await dbs[0].apps.create_app(app)
        assert await dbs[2].apps.get_app("shared") == app
        for db in dbs:
            await db.close()


@pytest.mark.parametrize(
    "url", ["mysql://root:hunter2@localhost/x", "nonsense", "sqlite:///:memory:"]
)
async def test_bad_urls_are_refused_without_leaking_secrets(url: str) -> None:
    with pytest.raises(ValueError) as info:
        await open_database(url)
    assert "hunter2" not in str(info.value)


async def test_unreachable_database_names_no_password() -> None:
    with pytest.raises(RuntimeError) as info:
        await open_database("postgresql://user:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value) and "unavailable" in str(info.value)
