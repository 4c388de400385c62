"""Server time of the project pages with 1,000 projects in the database (SQLite, through the
dashboard's ASGI app): each page is requested five times; the fastest is held under the 100 ms
target (on a machine shared with other test runs the slower ones measure the neighbours), and
the median and fastest are printed (pytest -s)."""

from __future__ import annotations

import re
import statistics
import time

from tests.unit.dashboard.test_security import client, db, sign_up  # noqa: F401
from xshathra.storage.database import Database
from xshathra.tenancy.apps import generate_app
from xshathra.tenancy.members import Member, Role

BOUND = 0.1  # seconds: the target (fastest of five measured at 6-40 ms on the shared machine)


async def test_project_pages_with_1000_projects(db: Database) -> None:  # noqa: F811
    async with client(db) as http:
        assert (await sign_up(http)).status_code == 303
        me = await db.accounts.find_account("op@example.com")
        assert me is not None
        # 1,000 projects: 500 the operator owns, 500 it is a member of (both listing paths).
        for i in range(1000):
            app, _ = generate_app(
                name=f"project {i}", owner_id=me.account_id if i % 2 == 0 else None
            )
            await db.apps.create_app(app)
            if i % 2:
                await db.members.add(
                    Member(
                        f"mem_{i:08x}",
                        app.app_id,
                        me.email,
                        Role.VIEWER,
                        me.account_id,
                        app.created_at,
                    )
                )
        listing = await http.get("/dashboard/projects?page=6")
        assert listing.text.count("<tr>") == 100 + 1  # a page of the list, and its header
        assert "501 to 600 of 1000" in listing.text
        app_id = re.findall(r'/dashboard/projects/(app_[0-9a-f]+)"', listing.text)[50]
        figures = {}
        for path in (
            "",
            "?q=project%2099",
            "/" + app_id,
            f"/{app_id}/settings",
            f"/{app_id}/webhooks",
            f"/{app_id}/members",
            f"/{app_id}/console",
            f"/{app_id}/analytics.json",
        ):
            url = "/dashboard/projects" + path
            assert (await http.get(url)).status_code == 200  # warm: templates compiled
            times = []
            for _ in range(5):
                started = time.perf_counter()
                answer = await http.get(url)
                times.append(time.perf_counter() - started)
                assert answer.status_code == 200
            figures[url] = min(times)
            print(
                f"{url}: median {statistics.median(times) * 1000:.1f} ms, "
                f"fastest {min(times) * 1000:.1f} ms"
            )
    slow = {k: v for k, v in figures.items() if v > BOUND}
    assert not slow, slow
