"""The analytics store's users per bucket, identical on SQLite and PostgreSQL: distinct users
per hour, and per day (the database groups the hours)."""

from __future__ import annotations

from xshathra.storage.database import Database

DAY = 86400


async def test_users_per_bucket_are_distinct_per_hour_and_per_day(database: Database) -> None:
    start = 1_700_006_400 // DAY * DAY  # a day's first hour
    users = {
        ("app-a", start, "u1"),
        ("app-a", start, "u2"),
        ("app-a", start + 3600, "u1"),
        ("app-a", start + DAY, "u3"),
        ("app-b", start, "u9"),  # another app's
    }
    await database.analytics.flush({}, users, "n1", {}, start)
    hours = await database.analytics.users_per_bucket("app-a", start, 3600)
    assert hours == {start: 2, start + 3600: 1, start + DAY: 1}
    days = await database.analytics.users_per_bucket("app-a", start, DAY)
    assert days == {start: 2, start + DAY: 1}  # u1 twice in its day counts once
    later = await database.analytics.users_per_bucket("app-a", start + 3600, 3600)
    assert later == {start + 3600: 1, start + DAY: 1}
