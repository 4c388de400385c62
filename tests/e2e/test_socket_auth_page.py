"""`/socket-auth-test.html` in Debian's Chromium, driven by Playwright: a person gets a token,
connects, subscribes, and sees messages published through the HTTP API arrive in the log."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.server import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
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
SCREENSHOT_DIR = Path(os.environ.get("XSHATHRA_SCREENSHOT_DIR", "/tmp"))
SCREENSHOT = SCREENSHOT_DIR / "socket-auth-test.png"
SCREENSHOT_ERRORS = SCREENSHOT_DIR / "socket-auth-test-errors.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def _open(page: Page, server: ServerProcess) -> None:
    response = page.goto(f"{server.base_url}/socket-auth-test.html")
    assert response is not None and response.ok


def _connect(page: Page, server: ServerProcess, api_key: str, user: str) -> None:
    from playwright.sync_api import expect

    _open(page, server)
    page.fill("#api-key", api_key)
    page.fill("#user-id", user)
    page.click("#get-token")
    expect(page.locator("#token-status")).to_contain_text("Token issued")
    expect(page.locator("#step-token .state")).to_have_text("done")
    page.click("#connect")
    expect(page.locator("#connect-status")).to_contain_text("Connected as client")
    expect(page.locator("#step-connect .state")).to_have_text("done")


def test_page_walks_through_token_connect_subscribe_and_messages(
    server: ServerProcess, browser: Browser, page: Page
) -> None:
    from playwright.sync_api import expect

    app = server.create_app(name="socket auth page")
    api_key = str(app["api_key"])
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    page.on("pageerror", lambda exc: console.append(f"page error: {exc}"))

    _connect(page, server, api_key, "page-user")
    page.click("#subscribe")
    expect(page.locator("#subscribe-status")).to_contain_text("Subscribed to public:lobby")
    expect(page.locator("#step-subscribe .state")).to_have_text("done")

    # A message published by a backend through the HTTP API shows up in the log, as text.
    r = httpx.post(
        f"{server.base_url}/api/realtime/publish",
        headers={"Authorization": f"apikey {api_key}"},
        json={"channel": "public:lobby", "data": {"text": "<b>hello from the test</b>"}},
    )
    assert r.status_code == 200, r.text
    log = page.locator("#log")
    expect(log).to_contain_text("<b>hello from the test</b>")
    assert page.locator("#log b").count() == 0  # inserted as text, never as markup
    expect(page.locator("#step-messages .state")).to_have_text("done")

    # The page's own publish button goes through the same endpoint.
    page.fill("#message-text", "typed in the page")
    page.click("#publish")
    expect(log).to_contain_text("typed in the page")

    # Another person joining and leaving the channel is shown too.
    other = browser.new_page()
    try:
        _connect(other, server, api_key, "second-user")
        other.click("#subscribe")
        expect(other.locator("#subscribe-status")).to_contain_text("Subscribed to public:lobby")
        expect(log.locator("li.kind-join")).to_contain_text("second-user")
    finally:
        other.close()
    expect(log.locator("li.kind-leave")).to_contain_text("second-user")

    # A channel outside `public:` needs a subscription token: refused with 103 without one.
    page.fill("#channel", "private-room")
    page.click("#subscribe")
    expect(page.locator("#subscribe-status")).to_contain_text("error 103")
    expect(page.locator("#step-subscribe .state")).to_have_text("failed")
    page.click("#get-sub-token")
    expect(page.locator("#subscribe-status")).to_contain_text("Subscription token issued")
    page.click("#subscribe")
    expect(page.locator("#subscribe-status")).to_contain_text("Subscribed to private-room")

    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert not any(api_key in line for line in console), "the API key reached the console"
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0


def test_page_reports_a_bad_key_and_a_refused_token(server: ServerProcess, page: Page) -> None:
    from playwright.sync_api import expect

    _open(page, server)
    page.fill("#api-key", "wrong-key")
    page.click("#get-token")
    expect(page.locator("#token-status")).to_contain_text("invalid API key")
    expect(page.locator("#step-token .state")).to_have_text("failed")

    # A pasted token the server cannot verify: the close code and its reason are shown.
    page.fill("#token", "not.a.token")
    page.click("#connect")
    status = page.locator("#connect-status")
    expect(status).to_contain_text("code 3500")
    expect(status).to_contain_text("must not reconnect")
    expect(page.locator("#step-connect .state")).to_have_text("failed")
    expect(page.locator("#step-token .state")).to_have_text("failed")
    page.screenshot(path=str(SCREENSHOT_ERRORS), full_page=True)
