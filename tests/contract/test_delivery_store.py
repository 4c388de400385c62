"""The webhook delivery outbox contract, identical on SQLite and PostgreSQL: claiming is fair
across apps and capped per app, the pending cap records the excess as dropped, held rows are
released or cancelled, old finished rows are pruned, the webhook cap is atomic."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from xshathra.storage.database import Database
from xshathra.tenancy.apps import generate_app, utcnow
from xshathra.webhooks.models import NewDelivery, Webhook, WebhookLimitError, new_webhook_id


async def _app_with_hook(database: Database, app_id: str) -> str:
    await database.apps.create_app(generate_app(name=app_id, app_id=app_id)[0])
    hook = Webhook(
        id=new_webhook_id(), app_id=app_id, url="https://x.example/h", secret="s" * 8, events=("*",)
    )
    await database.webhooks.create_webhook(hook)
    return hook.id


def _items(app_id: str, hook: str, n: int, tag: str = "") -> list[NewDelivery]:
    return [
        NewDelivery(f"dlv_{app_id}{tag}_{i}", hook, app_id, f"evt_{i}", "e", "r", "{}")
        for i in range(n)
    ]


async def test_claims_are_round_robin_across_apps_and_capped_per_app(database: Database) -> None:
    busy_hook = await _app_with_hook(database, "busy")
    quiet_hook = await _app_with_hook(database, "quiet")
    await database.deliveries.enqueue(_items("busy", busy_hook, 30))
    await database.deliveries.enqueue(_items("quiet", quiet_hook, 2))
    claimed = await database.deliveries.claim_due("n1", 6, 60, per_app=4)
    apps = [d.app_id for d in claimed]
    assert sorted(apps) == ["busy"] * 4 + ["quiet"] * 2  # the older backlog does not win
    more = await database.deliveries.claim_due("n1", 10, 60, per_app=4, busy={"busy": 4})
    assert more == []  # the busy app is at its cap; the quiet app has nothing left


async def test_two_claimers_never_take_the_same_row(database: Database) -> None:
    hook = await _app_with_hook(database, "race")
    await database.deliveries.enqueue(_items("race", hook, 20))
    a, b = await asyncio.gather(
        database.deliveries.claim_due("a", 20, 60, per_app=20),
        database.deliveries.claim_due("b", 20, 60, per_app=20),
    )
    ids = [d.id for d in a + b]
    assert len(ids) == len(set(ids)) == 20


async def test_pending_over_the_cap_is_recorded_as_dropped(database: Database) -> None:
    hook = await _app_with_hook(database, "capped")
    assert await database.deliveries.enqueue(_items("capped", hook, 3), max_pending=5) == 0
    assert await database.deliveries.enqueue(_items("capped", hook, 4, "b"), max_pending=5) == 2
    rows = await database.deliveries.list_for_webhook(hook)
    dropped = [r for r in rows if r.status == "failed"]
    assert len(rows) == 7 and len(dropped) == 2
    assert all(r.last_error and "dropped" in r.last_error for r in dropped)


async def test_held_rows_wait_until_released_and_cancelled_ones_vanish(
    database: Database,
) -> None:
    hook = await _app_with_hook(database, "held")
    await database.deliveries.enqueue(_items("held", hook, 2), hold_seconds=60)
    assert await database.deliveries.claim_due("n1", 10, 60) == []
    await database.deliveries.release(["dlv_held_0"])
    await database.deliveries.cancel(["dlv_held_1"])
    assert [d.id for d in await database.deliveries.claim_due("n1", 10, 60)] == ["dlv_held_0"]
    assert [r.id for r in await database.deliveries.list_for_webhook(hook)] == ["dlv_held_0"]


async def test_old_finished_rows_are_pruned(database: Database) -> None:
    hook = await _app_with_hook(database, "old")
    await database.deliveries.enqueue(_items("old", hook, 3))
    [first, second, third] = await database.deliveries.claim_due("n1", 3, 60)
    await database.deliveries.mark_delivered(first.id, "n1", 1, 200)
    await database.deliveries.mark_failed(second.id, "n1", 1, 500, "x")
    await database.deliveries.mark_retry(third.id, "n1", 1, 0, 500, "x")  # still pending
    assert await database.deliveries.prune(utcnow() - timedelta(days=1)) == 0
    assert await database.deliveries.prune(utcnow() + timedelta(seconds=5)) == 2
    assert [r.id for r in await database.deliveries.list_for_webhook(hook)] == [third.id]


async def test_the_webhook_cap_holds_under_concurrent_creation(database: Database) -> None:
    await database.apps.create_app(generate_app(name="cap", app_id="cap")[0])

    async def create(i: int) -> bool:
        hook = Webhook(
            id=new_webhook_id() + str(i), app_id="cap", url="https://x/h", secret="s" * 8,
            events=("*",),
        )  # fmt: skip
        try:
            await database.webhooks.create_webhook(hook, max_per_app=3)
        except WebhookLimitError as exc:
            assert str(exc) == "an app can have at most 3 webhooks"
            return False
        return True

    results = await asyncio.gather(*(create(i) for i in range(8)), return_exceptions=True)
    assert all(isinstance(r, bool) for r in results), results
    assert sum(r is True for r in results) == 3
    assert len(await database.webhooks.list_webhooks("cap")) == 3


async def test_a_recorded_attempt_is_listed_finished_and_never_claimed(database: Database) -> None:
    """A test event sent at once is stored with its outcome, and no node sends it again."""
    hook = await _app_with_hook(database, "tested")
    ok, refused = _items("tested", hook, 2)
    await database.deliveries.record_attempt(ok, 204, None)
    await database.deliveries.record_attempt(refused, None, "ConnectError")
    rows = {r.id: r for r in await database.deliveries.list_for_webhook(hook)}
    assert (rows[ok.id].status, rows[ok.id].attempts, rows[ok.id].last_status) == (
        "delivered",
        1,
        204,
    )
    assert (rows[refused.id].status, rows[refused.id].last_error) == ("failed", "ConnectError")
    assert await database.deliveries.claim_due("n1", 10, 60, per_app=10) == []
    assert await database.deliveries.replay(hook, refused.id)  # and it can be sent again
