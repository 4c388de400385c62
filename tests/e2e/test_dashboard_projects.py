"""A person's journey through a project in Debian's Chromium, by labels and button names:
sign up, create a project, copy its server key, broadcast with it over HTTP, see the message in
the live console and the chart move, add a webhook and see its delivery, invite a viewer who
sees no secret; then every project page at 1280 px and 375 px (screenshots, no overflow)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from websockets.sync.client import connect

from tests.e2e.test_dashboard import PASSWORD, SCREENSHOT_DIR, Person, browser  # noqa: F401
from tests.support.rawws import ENGINE_PATH
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

OWNER = "owner@example.com"
VIEWER = "viewer@example.com"
PAGES = ("", "/settings", "/proxies", "/webhooks", "/console", "/members")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node with the default sign-up policy (invite): the viewer comes in by invitation."""
    with running_server(tmp_path_factory.mktemp("journey")) as proc:
        yield proc


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOT_DIR / name), full_page=True)


def sign_up(page: Page, email: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()


def test_journey(browser: Browser, node: ServerProcess) -> None:  # noqa: F811
    from playwright.sync_api import expect

    owner = Person(browser, node)
    owner.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = owner.page
    page.goto("/dashboard/signup")
    sign_up(page, OWNER)
    expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()

    # Create a project: an empty name is refused beside the field, then it is made.
    page.get_by_role("button", name="Create project").click()
    expect(page.locator("#name-error")).to_contain_text("Name must be 1 to 200 characters")
    page.get_by_label("Project name").fill("Storefront chat")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name="Storefront chat")).to_be_visible()
    app_id = page.locator(".facts code").first.inner_text()
    base = f"/dashboard/projects/{app_id}"

    # Copy the key with its button: what lands on the clipboard is the server key.
    page.get_by_role("button", name="Copy server key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    key = page.evaluate("() => navigator.clipboard.readText()")
    assert key.startswith("xs_") and key == page.get_by_label("Server API key").input_value()
    shot(page, "dash-project-created-1280.png")
    page.reload()  # shown once: a reload repeats nothing and shows only its hint
    expect(page.get_by_label("Server API key")).to_have_count(0)
    expect(page.get_by_text(f"xs_…{key[-4:]}")).to_be_visible()

    # The socket test page, prefilled for the project (its app ID and a channel; no key).
    page.get_by_role("link", name="socket test page for this project").click()
    assert key not in page.url and app_id in page.url
    expect(page.get_by_text(f"Project {app_id}: paste its server API key")).to_be_visible()
    expect(page.locator("#channel")).to_have_value("public:lobby")
    page.go_back()

    # The live console watches public:lobby; a broadcast made with the key shows up in it.
    page.get_by_role("link", name="Live console").click()
    page.get_by_label("Channel to watch").fill("public:lobby")
    page.get_by_role("button", name="Watch channel").click()
    expect(page.get_by_role("status").filter(has_text="Watching")).to_have_text(
        "Watching public:lobby: live."
    )
    sent = httpx.post(
        f"{node.base_url}/api/broadcast",
        headers={"X-App-API-Key": key},
        json={"room": "public:lobby", "event": "order", "data": {"text": "first order"}},
    )
    assert sent.status_code == 200, sent.text
    log = page.get_by_role("list", name="Events on the channel, oldest first")
    expect(log).to_contain_text('order  {"text":"first order"}')
    # Publishing from the page reaches the same console.
    page.get_by_label("Message (text, or JSON sent as is)").fill("hello from the page")
    page.get_by_role("button", name="Publish test message").click()
    expect(page.get_by_text("Published to 1 subscriber.")).to_be_visible()
    expect(log).to_contain_text('{"text":"hello from the page"}')
    # Another client joining and leaving the channel shows as join and leave lines.
    minted = httpx.post(
        f"{node.base_url}/api/realtime/token",
        headers={"Authorization": f"apikey {key}"},
        json={"userId": "shopper-1", "channels": ["public:lobby"]},
    )
    minted.raise_for_status()
    with connect(node.base_url.replace("http", "ws", 1) + ENGINE_PATH) as ws:
        ws.send(json.dumps({"id": 1, "connect": {"token": minted.json()["token"]}}))
        assert "public:lobby" in json.loads(ws.recv(timeout=10))["connect"]["subs"]
        expect(log).to_contain_text("join")
        expect(log).to_contain_text("user shopper-1")
    expect(log.get_by_text("leave", exact=True)).to_be_visible()
    shot(page, "dash-console-1280.png")

    # The chart moves without a reload: publications counted so far, then one more.
    page.get_by_role("link", name="Overview").click()
    total = page.locator('[data-total="publications"]').first
    expect(total).to_have_text("2")
    httpx.post(
        f"{node.base_url}/api/broadcast",
        headers={"X-App-API-Key": key},
        json={"room": "public:lobby", "event": "order", "data": {"text": "second"}},
    ).raise_for_status()
    expect(total).to_have_text("3", timeout=10_000)
    peak = page.locator('[data-max="publications"]')
    expect(peak).not_to_have_text("0")

    # A webhook pointed at a local receiver: its test event is delivered and listed.
    with Receiver().running() as receiver:
        page.get_by_role("link", name="Webhooks").click()
        page.get_by_label("Receiver URL").fill(receiver.url)
        page.get_by_label("All events, including publications").check()
        page.get_by_role("button", name="Add webhook").click()
        expect(page.get_by_label("Webhook signing secret")).to_have_value(re.compile("^whsec_"))
        page.get_by_role("link", name=re.compile("Deliveries and settings")).click()
        page.get_by_role("button", name="Send test event").click()
        expect(page.get_by_role("status").first).to_contain_text("The test event is delivered")
        assert receiver.wait_for(1)[0].json()["event"] == "test"
        for _ in range(40):  # the delivery is marked right after the receiver answered
            page.get_by_role("link", name="Refresh deliveries").click()
            if page.get_by_role("cell", name="HTTP 200").count():
                break
        expect(page.get_by_role("cell", name="Delivered")).to_be_visible()
        expect(page.get_by_role("cell", name="HTTP 200")).to_be_visible()
        shot(page, "dash-webhook-1280.png")

    # A namespace option out of bounds is refused beside its field, and kept for fixing.
    page.get_by_role("link", name="Settings").click()
    page.get_by_text("Add or change a namespace").click()
    page.get_by_label("Namespace name").fill("chat")
    page.get_by_label("Presence: who is in a channel (presence)").check()
    page.get_by_label("History size (publications kept per channel)").fill("99999")
    page.get_by_role("button", name="Save namespace").click()
    history = page.get_by_label("History size (publications kept per channel)")
    expect(history).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#ns-history_size-error")).to_contain_text("from 0 to 10000")
    expect(page.get_by_label("Namespace name")).to_have_value("chat")
    shot(page, "dash-namespace-error-1280.png")
    history.fill("100")
    page.get_by_role("button", name="Save namespace").click()
    expect(page.get_by_role("status").first).to_have_text("The namespace is saved.")
    expect(page.get_by_role("rowheader", name="chat", exact=True)).to_be_visible()

    # Invite a viewer: a link for a person with no account; they see no secret.
    page.get_by_role("link", name="Members").click()
    page.get_by_label("Email address").fill(VIEWER)
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Invite member").click()
    link = page.get_by_label(f"Invitation link for {VIEWER}").input_value()
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("button", name="Reveal app secret").click()
    secret = page.get_by_label("App secret (signs tokens: keep it on your servers)").input_value()
    client_key = page.get_by_label("Client API key (for browsers and apps)").input_value()

    viewer = Person(browser, node)
    try:
        viewer.page.goto(link)
        sign_up(viewer.page, VIEWER)
        viewer.page.get_by_role("link", name="Storefront chat").click()
        expect(viewer.page.get_by_text("Hidden from viewers")).to_be_visible()
        expect(viewer.page.get_by_role("button", name="Reveal app secret")).to_have_count(0)
        for path in PAGES:
            viewer.page.goto(base + path)
            html = viewer.page.content()
            assert secret not in html and client_key not in html and key not in html
        expect(viewer.page.get_by_role("button", name="Invite member")).to_have_count(0)
        viewer.page.goto(base + "/console")
        expect(viewer.page.get_by_text("Viewers can watch but not publish.")).to_be_visible()
        assert not viewer.errors, viewer.errors
    finally:
        viewer.close()
    assert not owner.errors, owner.errors
    owner.close()


def test_proxies_form_by_labels(browser: Browser, node: ServerProcess) -> None:  # noqa: F811
    """The Proxies tab by labels: a bad endpoint is refused beside its field, a good proxy is
    saved and listed, then chosen as the connect proxy."""
    from playwright.sync_api import expect

    owner = Person(browser, node)
    try:
        page = owner.page
        owner.sign_in(OWNER)
        page.get_by_role("link", name="Storefront chat").first.click()
        page.get_by_role("link", name="Proxies").click()
        expect(page.get_by_role("heading", name="Add a proxy")).to_be_visible()
        page.get_by_label("Proxy name").fill("auth")
        page.get_by_label("Endpoint URL").fill("backend.example.com/connect")
        page.get_by_label("Timeout").fill("2s")
        page.get_by_label("Forwarded header names").fill("Authorization, Cookie")
        page.get_by_label("Static headers").fill("X-Api-Key: k1")
        page.get_by_role("button", name="Save proxy").click()
        endpoint = page.get_by_label("Endpoint URL")
        expect(endpoint).to_have_attribute("aria-invalid", "true")
        expect(endpoint).to_have_attribute("aria-describedby", re.compile("proxy-endpoint-error"))
        expect(page.locator("#proxy-endpoint-error")).to_have_text(
            "Must be an http:// or https:// URL."
        )
        expect(page.get_by_label("Static headers")).to_have_value("X-Api-Key: k1")  # kept
        endpoint.fill("http://127.0.0.1:9/centrifugo")
        page.get_by_role("button", name="Save proxy").click()
        expect(page.get_by_role("status")).to_have_text("The proxy is saved.")
        row = page.get_by_role("row", name=re.compile("auth"))
        expect(row).to_contain_text("http://127.0.0.1:9/centrifugo")
        expect(row).to_contain_text("Forwarded: Authorization, Cookie")
        page.get_by_label("Connect proxy").select_option(label="Proxy auth")
        page.get_by_role("button", name="Save connection proxies").click()
        expect(page.get_by_role("status")).to_have_text("The connection proxies are saved.")
        expect(page.get_by_label("Connect proxy")).to_have_value("auth")
        assert not owner.errors, owner.errors
    finally:
        owner.close()


def test_pusher_switches_by_labels(browser: Browser, node: ServerProcess) -> None:  # noqa: F811
    """Settings by labels: Pusher subscription counting and enforced sign-in are switched on,
    saved, shown checked again and stored on the app; then off again."""
    from playwright.sync_api import expect

    owner = Person(browser, node)
    labels = (
        "Pusher subscription counting: send subscriber counts",
        "Pusher user authentication: clients must sign in",
    )
    try:
        page = owner.page
        owner.sign_in(OWNER)
        page.get_by_role("link", name="Storefront chat").first.click()
        page.get_by_role("navigation", name="Project").get_by_role("link", name="Settings").click()
        for label in labels:
            expect(page.get_by_label(label)).not_to_be_checked()
            page.get_by_label(label).check()
        page.get_by_role("button", name="Save settings").click()
        expect(page.get_by_role("status")).to_have_text("The settings are saved.")
        for label in labels:
            expect(page.get_by_label(label)).to_be_checked()
        shot(page, "dash-project-pusher-settings-1280.png")
        app_id = page.url.split("/dashboard/projects/")[1].split("/")[0]
        stored = httpx.get(
            f"{node.base_url}/api/applications",
            params={"app_id": app_id},
            headers=node.admin_headers(),
        ).json()["application"]
        assert stored["pusher_subscription_count"] is True
        assert stored["pusher_user_authentication"] is True
        for label in labels:
            page.get_by_label(label).uncheck()
        page.get_by_role("button", name="Save settings").click()
        expect(page.get_by_role("status")).to_have_text("The settings are saved.")
        expect(page.get_by_label(labels[1])).not_to_be_checked()
        assert not owner.errors, owner.errors
    finally:
        owner.close()


def test_project_pages_fit_desktop_and_phone(browser: Browser, node: ServerProcess) -> None:  # noqa: F811
    """Every project page at 1280 px and 375 px: nothing wider than the screen, no console
    error; screenshots for a person to look at."""
    for width in (1280, 375):
        visitor = Person(browser, node, width)
        try:
            page = visitor.page
            visitor.sign_in(OWNER)
            page.get_by_role("link", name="Storefront chat").first.click()
            base = page.url.split("?")[0]
            for path in PAGES:
                page.goto(base + path)
                name = path.strip("/") or "overview"
                shot(page, f"dash-project-{name}-{width}.png")
                overflow = page.evaluate(
                    "() => document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 0, f"{name} is {overflow}px wider than {width}px"
            page.goto("/dashboard/projects")
            shot(page, f"dash-projects-list-{width}.png")
            assert not visitor.errors, visitor.errors
        finally:
            visitor.close()
