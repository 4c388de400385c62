"""The application service's dashboard side on SQLite: members and roles, the projects of an
account (owned and member of), a member's update bounded by the key's rate ceiling, webhook
edits checked as on creation, the test event queued, and field names on refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.tenancy.test_service import Recorder
from xshathra.accounts.models import Account, AccountId
from xshathra.storage.database import Database, open_database
from xshathra.tenancy.apps import utcnow
from xshathra.tenancy.members import Role
from xshathra.tenancy.service import ApplicationService, InvalidInput, NotFound, OperatorOnly


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path / 'projects.db'}")
    try:
        yield database
    finally:
        await database.close()


def service(db: Database, notifier: Recorder | None = None) -> ApplicationService:
    return ApplicationService(
        db.apps,
        db.webhooks,
        db.deliveries,
        notifier or Recorder(),
        key_rate_limit_ceiling=1000,
        webhook_allow_private=True,
        members=db.members,
    )


async def account(db: Database, email: str) -> str:
    now = utcnow()
    acc = Account(AccountId("acc_" + email.split("@")[0]), email, "x", False, False, now, now)
    await db.accounts.create_account(acc)
    return acc.account_id


async def test_roles_and_projects_of_an_account(db: Database) -> None:
    apps = service(db)
    owner, dev = await account(db, "o@example.com"), await account(db, "d@example.com")
    mine, _ = await apps.create_application(name="Mine", owner_id=owner)
    other, _ = await apps.create_application(name="Other")
    assert await apps.role_of(mine, owner, operator=False) is Role.OWNER
    assert await apps.role_of(other, owner, operator=False) is None
    assert await apps.role_of(other, owner, operator=True) is Role.OWNER
    member = await apps.add_member(
        mine.app_id, email="d@example.com", role="developer", account_id=dev
    )
    assert await apps.role_of(mine, dev, operator=False) is Role.DEVELOPER
    assert [(a.app_id, r) for a, r in await apps.projects_of(dev)] == [
        (mine.app_id, Role.DEVELOPER)
    ]
    with pytest.raises(InvalidInput) as taken:
        await apps.add_member(mine.app_id, email="d@example.com", role="viewer", account_id=dev)
    assert taken.value.field == "email"
    with pytest.raises(InvalidInput) as bad_role:
        await apps.set_member_role(mine.app_id, member.member_id, "admin")
    assert bad_role.value.field == "role"
    await apps.set_member_role(mine.app_id, member.member_id, "viewer")
    assert await apps.role_of(mine, dev, operator=False) is Role.VIEWER
    with pytest.raises(NotFound):
        await apps.remove_member(other.app_id, member.member_id)  # not through another app
    await apps.remove_member(mine.app_id, member.member_id)
    assert await apps.projects_of(dev) == []


async def test_invited_email_is_bound_only_by_its_invitation(db: Database) -> None:
    apps = service(db)
    app, _ = await apps.create_application(name="Shop")
    await apps.add_member(
        app.app_id, email="n@example.com", role="viewer", account_id=None, invitation_hash="h1"
    )
    newcomer = await account(db, "n@example.com")
    assert await apps.role_of(app, newcomer, operator=False) is None  # same email: not enough
    assert await apps.claim_invitation("other", newcomer, "n@example.com") == 0
    assert await apps.claim_invitation("h1", newcomer, "n@example.com") == 1
    assert await apps.role_of(app, newcomer, operator=False) is Role.VIEWER
    await apps.delete_application(app.app_id)
    assert await apps.projects_of(newcomer) == []


async def test_member_update_is_bounded_and_names_its_field(db: Database) -> None:
    apps = service(db)
    app, _ = await apps.create_application(name="Shop")
    with pytest.raises(InvalidInput) as high:
        await apps.update_project(app, {"rate_limit": 5000}, operator=False)
    assert high.value.field == "rate_limit"
    assert (await apps.update_project(app, {"rate_limit": 5000}, operator=True)).rate_limit == 5000
    disabled = await apps.update_project(app, {"status": False}, operator=False)
    assert (await apps.update_project(disabled, {"status": True}, operator=False)).status
    with pytest.raises(InvalidInput) as ns:
        await apps.update_project(
            app, {"namespaces": {"chat": {"history_ttl": -1}}}, operator=False
        )
    assert ns.value.field == "history_ttl"


async def test_webhook_edit_and_test_event(db: Database) -> None:
    told = Recorder()
    apps = service(db, told)
    app, _ = await apps.create_application(name="Shop")
    hook, _ = await apps.create_webhook(app.app_id, url="http://127.0.0.1:9/a", events=["*"])
    await apps.update_webhook(
        app.app_id, hook.id, url="http://127.0.0.1:9/b", events=["user-joined"]
    )
    (saved,) = await apps.list_webhooks(app.app_id)
    assert (saved.url, saved.events) == ("http://127.0.0.1:9/b", ("user-joined",))
    assert told.told[-1] == ("webhooks", app.app_id)
    with pytest.raises(InvalidInput) as empty:
        await apps.update_webhook(app.app_id, hook.id, url="http://127.0.0.1:9/b", events=[])
    assert empty.value.field == "events"
    other, _ = await apps.create_application(name="Other")
    with pytest.raises(NotFound):
        await apps.update_webhook(other.app_id, hook.id, url="http://127.0.0.1:9/c", events=["*"])
    with pytest.raises(NotFound):
        await apps.send_test_event(other.app_id, hook.id)
    # Sending needs a node's dispatcher: without one the service says so, and stores nothing.
    with pytest.raises(InvalidInput, match="running node"):
        await apps.send_test_event(app.app_id, hook.id)
    assert await apps.list_deliveries(app.app_id, hook.id) == []


async def test_quotas_from_the_dashboard_are_the_operators_alone(db: Database) -> None:
    """A member's dashboard update may not carry quotas (the dashboard writes as the admin
    would); the operator's is checked as the admin API's, naming the quota."""
    apps = service(db)
    app, _ = await apps.create_application(name="Quota")
    with pytest.raises(OperatorOnly):
        await apps.update_project(app, {"quotas": {"max_connections": 5}}, operator=False)
    with pytest.raises(InvalidInput) as bad:
        await apps.update_project(app, {"quotas": {"max_message_size": 0}}, operator=True)
    assert bad.value.field == "max_message_size"
    updated = await apps.update_project(
        app, {"quotas": {"max_connections": 5, "rate_limit_ceiling": None}}, operator=True
    )
    assert (updated.quotas.max_connections, updated.quotas.rate_limit_ceiling) == (5, None)


async def test_a_regenerated_client_key_finds_the_app_and_the_old_one_does_not(
    db: Database,
) -> None:
    told = Recorder()
    apps = service(db, told)
    app, _ = await apps.create_application(name="Keys")
    updated = await apps.regenerate_client_key(app, as_admin=True)
    assert updated.client_api_key.startswith("xc_")
    assert updated.client_api_key != app.client_api_key
    assert await db.apps.find_by_client_key(app.client_api_key) is None
    found = await db.apps.find_by_client_key(updated.client_api_key)
    assert found is not None and found.app_id == app.app_id
    assert told.told[-1] == ("app", app.app_id)  # every node drops its cached copy
