"""`/socket-auth-test.html` in Debian's Chromium, driven by Playwright: a person gets a token,
connects, subscribes, and sees a message published through the HTTP API."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="Debian chromium is not installed (apt-get install chromium)",
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(os.environ.get("XSHATHRA_SCREENSHOT_DIR", "/tmp")) / "socket-auth-test.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


def test_page_walks_through_token_connect_subscribe_and_messages(
    server: ServerProcess, browser: object
) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    app = server.create_app(name="page")
    page = browser.new_page()
    page.goto(f"{server.base_url}/socket-auth-test.html")
    page.fill("#api-key", str(app["api_key"]))
    page.fill("#user-id", "page-user")
    page.click("#get-token")
    expect(page.locator("#token-status")).to_contain_text("Token issued")
    page.click("#connect")
    expect(page.locator("#connect-status")).to_contain_text("Connected as client")
    page.click("#subscribe")
    expect(page.locator("#subscribe-status")).to_contain_text("Subscribed to public:lobby")

    r = httpx.post(
        f"{server.base_url}/api/realtime/publish",
        headers={"Authorization": f"apikey {app['api_key']}"},
        json={"channel": "public:lobby", "data": {"text": "<b>hello page</b>"}},
    )
    assert r.status_code == 200
    expect(page.locator("#log")).to_contain_text("<b>hello page</b>")  # shown as text, not HTML
    page.fill("#message-text", "typed in the page")
    page.click("#publish")
    expect(page.locator("#log")).to_contain_text("typed in the page")

    page.fill("#channel", "private-room")
    page.click("#subscribe")
    expect(page.locator("#subscribe-status")).to_contain_text("error 103")
    page.click("#get-sub-token")
    expect(page.locator("#subscribe-status")).to_contain_text("Subscription token issued")
    page.click("#subscribe")
    expect(page.locator("#subscribe-status")).to_contain_text("Subscribed to private-room")
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.close()


def test_page_reports_a_bad_key(server: ServerProcess, browser: object) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    page = browser.new_page()
    page.goto(f"{server.base_url}/socket-auth-test.html")
    page.fill("#api-key", "wrong-key")
    page.click("#get-token")
    expect(page.locator("#token-status")).to_contain_text("invalid API key")
    page.close()
