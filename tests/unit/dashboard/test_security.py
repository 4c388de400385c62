"""The dashboard's request guards, through its ASGI app on a real SQLite database: the Secure
cookie flag follows the request's own scheme (never X-Forwarded-Proto), forms are bounded, a
JSON body is not a form, and pages carry a CSP without inline scripts."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from xshathra.accounts.service import AccountService, SignupPolicy
from xshathra.analytics.recorder import AnalyticsRecorder
from xshathra.dashboard import create_dashboard
from xshathra.dashboard.security import MAX_FORM_BYTES, same_token
from xshathra.storage.database import Database, open_database
from xshathra.tenancy.apps import generate_app
from xshathra.tenancy.service import ApplicationService, NoNotifier
from xshathra.tenancy.tokens import TokenService

PASSWORD = "correct horse battery"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path / 'dash.db'}")
    try:
        yield database
    finally:
        await database.close()


def dashboard_app(db: Database) -> Starlette:
    """The dashboard over a real database: the account and application services, a token
    service and an analytics reader (no engine: the console's publisher is absent)."""
    service = AccountService(db.accounts, signup=SignupPolicy.INVITE)
    apps = ApplicationService(db.apps, db.webhooks, db.deliveries, NoNotifier(), members=db.members)
    dashboard = create_dashboard(
        service,
        apps,
        session_ttl=3600,
        tokens=TokenService("unit-test-secret"),
        analytics=AnalyticsRecorder(db.analytics, "unit"),
    )
    return Starlette(routes=[Mount("/dashboard", dashboard.app)])


def client(db: Database, base_url: str = "http://testserver") -> httpx.AsyncClient:
    app = dashboard_app(db)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def sign_up(http: httpx.AsyncClient, **headers: str) -> httpx.Response:
    page = await http.get("/dashboard/signup")
    token = re.search(r'name="form_token" value="([^"]+)"', page.text)
    assert token
    return await http.post(
        "/dashboard/signup",
        data={
            "form_token": token.group(1),
            "email": "op@example.com",
            "password": PASSWORD,
            "confirm_password": PASSWORD,
        },
        headers=headers,
    )


async def test_cookie_is_secure_over_https(db: Database) -> None:
    """Over HTTPS the session cookie is Secure, HttpOnly and SameSite=Lax."""
    async with client(db, "https://testserver") as http:
        response = await sign_up(http)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()


async def test_forwarded_proto_is_not_trusted(db: Database) -> None:
    """A plain-HTTP request claiming X-Forwarded-Proto: https gets no Secure flag (trusted
    proxies are not configured)."""
    async with client(db) as http:
        response = await sign_up(http, **{"X-Forwarded-Proto": "https"})
    assert response.status_code == 303 and "Secure" not in response.headers["set-cookie"]


async def test_bad_bodies_are_refused_with_403(db: Database) -> None:
    """A JSON body or an oversized form is not one of our forms: 403, a readable page."""
    async with client(db) as http:
        page = await http.get("/dashboard/login")
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "<script>" not in page.text  # only <script src=...> of our own
        as_json = await http.post("/dashboard/login", json={"email": "a@b.c"})
        assert as_json.status_code == 403 and "cannot be accepted" in as_json.text
        huge = await http.post(
            "/dashboard/login",
            content=b"a=" + b"x" * (MAX_FORM_BYTES + 1),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 403
        missing = await http.get("/dashboard/nowhere")
        assert missing.status_code == 404 and "Page not found" in missing.text


def test_same_token() -> None:
    """A missing or different token never matches."""
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd")
    assert not same_token(None, "abc") and not same_token("", "") and not same_token("a", None)


async def test_projects_page_with_1000_apps_is_fast(db: Database) -> None:
    """The operator's Projects page lists 1,000 applications in well under a second (the
    target is 100 ms of server time; the bound here leaves room for a loaded test machine)."""
    for i in range(1000):
        app, _ = generate_app(name=f"project {i}")
        await db.apps.create_app(app)
    async with client(db) as http:
        assert (await sign_up(http)).status_code == 303
        await http.get("/dashboard/projects")  # templates compiled, pool warm
        # The best of five: the page's own cost, not a moment when another test's process
        # had the machine's two cores (one request was seen taking 3 s then, 14 ms alone).
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            page = await http.get("/dashboard/projects")
            timings.append(time.perf_counter() - started)
    elapsed = min(timings)
    # One page of the list (100 of the 1,000) and its header row.
    assert page.status_code == 200 and page.text.count("<tr>") == 101
    assert elapsed < 0.5, f"{elapsed * 1000:.0f} ms"
    print(f"projects page with 1000 apps: {elapsed * 1000:.1f} ms")
