"""The application service on its own (SQLite stores, a notifier that records): its checks, the
H2 rule that a key's change loses to a regeneration or suspension, and that every change it
makes is told through its one notifier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from xshathra.storage.database import Database, open_database
from xshathra.tenancy.apps import AppExistsError
from xshathra.tenancy.service import (
    AppDisabled,
    ApplicationService,
    InvalidInput,
    KeyReplaced,
    NotFound,
)


class Recorder:
    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []

    async def app_changed(self, app_id: str) -> None:
        self.told.append(("app", app_id))

    async def webhooks_changed(self, app_id: str) -> None:
        self.told.append(("webhooks", app_id))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path / 'service.db'}")
    try:
        yield database
    finally:
        await database.close()


def service(db: Database, notifier: Recorder) -> ApplicationService:
    return ApplicationService(
        db.apps,
        db.webhooks,
        db.deliveries,
        notifier,
        default_rate_limit=500,
        key_rate_limit_ceiling=1000,
        webhook_max_per_app=1,
        webhook_allow_private=True,
    )


async def test_create_checks_and_defaults(db: Database) -> None:
    apps = service(db, Recorder())
    app, keys = await apps.create_application(name="  Shop ", app_id="shop")
    assert (app.name, app.rate_limit, app.api_key_hash) == ("Shop", 500, keys.api_key_hash)
    with pytest.raises(AppExistsError):
        await apps.create_application(name="again", app_id="shop")
    for bad in ({"name": " "}, {"name": "x", "app_id": "bad id"}, {"name": "x", "rate_limit": 0}):
        with pytest.raises(InvalidInput):
            await apps.create_application(**bad)
    with pytest.raises(InvalidInput, match="allowed_domain"):
        await apps.create_application(name="x", allowed_domain="not a domain")


async def test_update_writes_only_what_is_given_and_tells_the_nodes(db: Database) -> None:
    told = Recorder()
    apps = service(db, told)
    app, _ = await apps.create_application(name="a", app_id="a", allowed_domain="example.com")
    updated = await apps.update_application(
        app, {"namespaces": {"chat": {"presence": True}}}, as_admin=False
    )
    assert updated.allowed_domain == "example.com" and updated.namespaces["chat"].presence
    assert told.told == [("app", "a")]
    with pytest.raises(InvalidInput, match="rate_limit must be an integer from 1 to 1000"):
        await apps.update_application(app, {"rate_limit": 5000}, as_admin=False)
    assert (await apps.update_application(app, {"rate_limit": 5000}, as_admin=True)).rate_limit
    with pytest.raises(InvalidInput, match="history_size"):
        await apps.update_application(
            app, {"namespaces": {"chat": {"history_size": 10**6}}}, as_admin=True
        )
    with pytest.raises(InvalidInput, match="namespace name"):
        await apps.update_application(app, {"namespaces": {"no way": {}}}, as_admin=True)


async def test_a_keys_change_loses_to_a_regeneration_or_suspension(db: Database) -> None:
    apps = service(db, Recorder())
    app, _ = await apps.create_application(name="a", app_id="a")
    await apps.regenerate_api_key(app, as_admin=True)
    with pytest.raises(KeyReplaced):
        await apps.update_application(app, {"name": "stale"}, as_admin=False)
    with pytest.raises(KeyReplaced):
        await apps.regenerate_api_key(app, as_admin=False)
    current = await apps.get_application("a")
    assert current is not None and current.name == "a"
    await apps.update_application(current, {"status": False}, as_admin=True)
    with pytest.raises(AppDisabled):
        await apps.update_application(current, {"name": "late"}, as_admin=False)
    await apps.delete_application("a")
    with pytest.raises(NotFound):
        await apps.update_application(current, {"name": "gone"}, as_admin=False)
    with pytest.raises(NotFound):
        await apps.delete_application("a")


async def test_webhooks(db: Database) -> None:
    told = Recorder()
    apps = service(db, told)
    await apps.create_application(name="a", app_id="a")
    hook, secret = await apps.create_webhook(
        "a", url="https://example.com/h", events=[" e ", "e", "f"]
    )
    assert hook.events == ("e", "f") and secret is not None and secret.startswith("whsec_")
    with pytest.raises(InvalidInput, match="at most 1 webhooks"):
        await apps.create_webhook("a", url="https://example.com/2", events=["e"], secret="s" * 8)
    with pytest.raises(InvalidInput, match="events"):
        await apps.create_webhook("a", url="https://example.com/3", events=[])
    await apps.set_webhook_enabled("a", hook.id, False)
    assert [h.enabled for h in await apps.list_webhooks("a")] == [False]
    assert await apps.list_deliveries("a", hook.id) == []
    with pytest.raises(NotFound, match="delivery not found"):
        await apps.replay_delivery("a", hook.id, "nope")
    with pytest.raises(NotFound, match="webhook not found"):
        await apps.list_deliveries("other", hook.id)
    await apps.delete_webhook("a", hook.id)
    with pytest.raises(NotFound):
        await apps.delete_webhook("a", hook.id)
    assert told.told == [("webhooks", "a")] * 3


async def test_proxy_endpoints_on_private_addresses_are_refused_naming_the_field(
    db: Database,
) -> None:
    """Proxy endpoints pass the webhooks' address guard at save time (their own switch); the
    refusal names the field, never the URL, which may carry a credential."""
    apps = ApplicationService(
        db.apps, db.webhooks, db.deliveries, Recorder(), proxy_allow_private=False
    )
    app, _ = await apps.create_application(name="p", app_id="p")
    secret_url = "http://127.0.0.1:9/hook?token=s3cret"
    with pytest.raises(InvalidInput) as refused:
        await apps.update_application(
            app,
            {
                "proxies": {
                    "client": {"proxy": {"connect": {"enabled": True, "endpoint": secret_url}}}
                }
            },
            as_admin=True,
        )
    assert "proxies.client.proxy.connect.endpoint" in refused.value.message
    assert "s3cret" not in refused.value.message
    # A namespace may only name a proxy the app has.
    with pytest.raises(InvalidInput, match="subscribe_proxy_name"):
        await apps.update_application(
            app, {"namespaces": {"room": {"subscribe_proxy_enabled": True}}}, as_admin=True
        )
