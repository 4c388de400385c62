"""The dashboard's operator and owner work in Debian's Chromium, by labels and button names, on
a two-node cluster (one PostgreSQL, one Redis) so that a browser on one node and clients on
the other meet: invitations that a reload never makes twice, the client key and app secret
regenerated with confirmation by owners only, the operator's quotas (read-only for owners), a
webhook's test event answered at once, the users chart and the live console's app-wide
lifecycle events. The tests run in order: the first sign-up makes the operator."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.e2e.test_dashboard import PASSWORD, SCREENSHOT_DIR, Person, browser  # noqa: F401
from tests.integration.test_cluster import shared_broker
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, cluster_nodes

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

OPERATOR = "op@example.com"
OWNER = "owner@example.com"  # signs up with the operator's invitation, owns a project
DEVELOPER = "dev@example.com"  # invited to the operator's project as a developer
PROJECT = "Ops board"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    env = {"XSHATHRA_BROKER_PREFIX": f"xs_dash_{secrets.token_hex(4)}"}
    with cluster_nodes(tmp_path_factory, shared_broker("redis"), env) as pair:
        yield pair


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOT_DIR / name), full_page=True)


def sign_up(page: Page, email: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()


def posts_during(page: Page, action: object) -> list[str]:
    """The POST requests the page sent while `action()` ran (a reload must send none)."""
    sent: list[str] = []

    def seen(request: object) -> None:
        if request.method == "POST":  # type: ignore[attr-defined]
            sent.append(request.url)  # type: ignore[attr-defined]

    page.on("request", seen)
    try:
        action()  # type: ignore[operator]
    finally:
        page.remove_listener("request", seen)
    return sent


def open_project(page: Page, name: str = PROJECT) -> str:
    page.goto("/dashboard/projects")
    page.get_by_role("link", name=name).first.click()
    return page.url.split("?")[0]


def test_invitations_survive_a_reload(
    browser: Browser,  # noqa: F811
    nodes: list[ServerProcess],
) -> None:
    """The operator's invitation link and a project's member invitation are made by a POST
    that redirects: a reload shows the page again without posting, makes no second
    invitation and no longer shows the link. Accepting one (signing up) redirects too."""
    from playwright.sync_api import expect

    operator = Person(browser, nodes[0])
    page = operator.page
    page.goto("/dashboard/signup")
    sign_up(page, OPERATOR)
    expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()

    page.get_by_role("link", name="Accounts").click()
    page.get_by_role("button", name="Create invitation link").click()
    link = page.get_by_label("New invitation link").input_value()
    assert "/dashboard/signup?invitation=" in link and "invitation=" not in page.url
    invitations = page.get_by_role("table", name="Invitation links").get_by_role("row")
    expect(invitations).to_have_count(2)  # its header and the one invitation
    shot(page, "dash-invitation-made-1280.png")
    assert posts_during(page, page.reload) == []
    expect(page.get_by_label("New invitation link")).to_have_count(0)
    expect(invitations).to_have_count(2)  # still one invitation

    # Accepting it: the sign-up form posts once, then a reload repeats nothing.
    owner = Person(browser, nodes[1])  # the other node: sessions live in the database
    try:
        owner.page.goto(link)
        sign_up(owner.page, OWNER)
        expect(owner.page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
        assert owner.page.url.endswith("/dashboard/projects")
        assert posts_during(owner.page, owner.page.reload) == []
        expect(owner.page.get_by_text("Your account owns no projects yet.")).to_be_visible()
        owner.page.get_by_label("Project name").fill("Owner's shop")
        owner.page.get_by_role("button", name="Create project").click()
        expect(owner.page.get_by_role("heading", name="Owner's shop")).to_be_visible()
        assert not owner.errors, owner.errors
    finally:
        owner.close()
    page.reload()
    expect(page.get_by_role("cell", name=f"Used by {OWNER}")).to_be_visible()

    # A project's member invitation: the same, on the Members tab.
    page.goto("/dashboard/projects")
    page.get_by_label("Project name").fill(PROJECT)
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name=PROJECT)).to_be_visible()
    page.get_by_role("link", name="Members").click()
    page.get_by_label("Email address").fill(DEVELOPER)
    page.get_by_label("Role").select_option("developer")
    page.get_by_role("button", name="Invite member").click()
    member_link = page.get_by_label(f"Invitation link for {DEVELOPER}").input_value()
    assert "/dashboard/signup?invitation=" in member_link
    rows = page.get_by_role("row").filter(has_text=DEVELOPER)
    expect(rows).to_have_count(1)
    assert posts_during(page, page.reload) == []
    expect(page.get_by_label(f"Invitation link for {DEVELOPER}")).to_have_count(0)
    expect(rows).to_have_count(1)

    developer = Person(browser, nodes[0])
    try:
        developer.page.goto(member_link)
        sign_up(developer.page, DEVELOPER)
        expect(developer.page.get_by_role("link", name=PROJECT)).to_be_visible()
    finally:
        developer.close()
    assert not operator.errors, operator.errors
    operator.close()


def test_owner_regenerates_client_key_and_secret_with_confirmation(
    browser: Browser,  # noqa: F811
    nodes: list[ServerProcess],
) -> None:
    """An owner replaces the client key and the app secret (with a grace period), each only
    with its box ticked; the new secret mints tokens over the API, and so does the old one
    during its grace period. A developer sees neither button."""
    from playwright.sync_api import expect

    owner = Person(browser, nodes[0])
    page = owner.page
    owner.sign_in(OPERATOR)
    open_project(page)
    client_key = page.get_by_label("Client API key (for browsers and apps)")
    old_client_key = client_key.input_value()
    page.get_by_role("button", name="Reveal app secret").click()
    secret_field = page.get_by_label("App secret (signs tokens: keep it on your servers)")
    old_secret = secret_field.input_value()
    app_id = page.locator(".facts code").first.inner_text()

    # The client key: refused without the box, replaced with it.
    page.get_by_text("Regenerate the client key").click()
    page.get_by_role("button", name="Regenerate client key").click()
    box = page.get_by_label("Yes, stop the current client key now")
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#confirm_client_key-error")).to_contain_text("Tick the box to confirm")
    box.check()
    page.get_by_role("button", name="Regenerate client key").click()
    expect(page.get_by_role("status").first).to_contain_text("A new client key is made")
    new_client_key = client_key.input_value()
    assert new_client_key.startswith("xc_") and new_client_key != old_client_key
    assert posts_during(page, page.reload) == []
    expect(client_key).to_have_value(new_client_key)

    # The app secret, with a day's grace for tokens signed with the old one.
    page.get_by_text("Regenerate the app secret").click()
    page.get_by_label("Grace period for the current secret").select_option(label="24 hours")
    page.get_by_label("Yes, replace the app secret").check()
    page.get_by_role("button", name="Regenerate app secret").click()
    expect(page.get_by_role("status").first).to_contain_text("A new app secret is made")
    expect(
        page.get_by_text("Tokens signed with the previous app secret are accepted until")
    ).to_be_visible()
    page.get_by_role("button", name="Reveal app secret").click()
    new_secret = secret_field.input_value()
    assert new_secret.startswith("xss_") and new_secret != old_secret
    shot(page, "dash-keys-regenerated-1280.png")
    for secret in (new_secret, old_secret):  # the old one within its grace period
        minted = httpx.post(
            f"{nodes[1].base_url}/api/token",
            json={"app_id": app_id, "app_secret": secret, "payload": {"sub": "u1"}},
        )
        assert minted.status_code == 200, minted.text
    wrong = httpx.post(
        f"{nodes[1].base_url}/api/token",
        json={"app_id": app_id, "app_secret": "xss_" + "x" * 32},
    )
    assert wrong.status_code in (401, 403), wrong.text
    assert not owner.errors, owner.errors
    owner.close()

    developer = Person(browser, nodes[1])
    try:
        developer.sign_in(DEVELOPER)
        open_project(developer.page)
        expect(developer.page.get_by_role("button", name="Reveal app secret")).to_be_visible()
        for name in ("Regenerate client key", "Regenerate app secret"):
            expect(developer.page.get_by_role("button", name=name)).to_have_count(0)
    finally:
        developer.close()


def test_operator_sets_quotas_and_owner_reads_them(
    browser: Browser,  # noqa: F811
    nodes: list[ServerProcess],
) -> None:
    """The operator edits an owner's project quotas on its Settings tab (errors beside the
    field, the API's checks); the owner sees them read-only and cannot post them."""
    from playwright.sync_api import expect

    operator = Person(browser, nodes[0])
    page = operator.page
    operator.sign_in(OPERATOR)
    settings = open_project(page, "Owner's shop") + "/settings"
    page.goto(settings)
    most = page.get_by_label("Most open connections (all nodes)")
    most.fill("lots")
    page.get_by_role("button", name="Save quotas").click()
    expect(most).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#quota-max_connections-error")).to_contain_text("whole number")
    most.fill("0")
    page.get_by_role("button", name="Save quotas").click()
    expect(page.locator("#quota-max_connections-error")).to_contain_text(
        "Enter a number from 1 to 1,000,000,000"
    )
    most.fill("2")
    page.get_by_label("Largest publication (bytes)").fill("4096")
    page.get_by_role("button", name="Save quotas").click()
    expect(page.get_by_role("status").first).to_have_text(
        "The quotas are saved. They hold on every node from now on."
    )
    expect(most).to_have_value("2")
    shot(page, "dash-quotas-operator-1280.png")
    app_id = settings.split("/projects/")[1].split("/")[0]
    listed = httpx.get(f"{nodes[1].base_url}/api/applications", headers=nodes[1].admin_headers())
    stored = next(a for a in listed.json()["applications"] if a["app_id"] == app_id)
    assert (stored["max_connections"], stored["max_message_size"]) == (2, 4096)
    assert stored["max_connections_per_user"] is None
    assert not operator.errors, operator.errors
    operator.close()

    owner = Person(browser, nodes[1])
    try:
        owner.sign_in(OWNER)
        owner.page.goto(settings)
        quotas = owner.page.get_by_role("definition")
        expect(owner.page.get_by_text("Set by the server's operator")).to_be_visible()
        expect(owner.page.get_by_role("button", name="Save quotas")).to_have_count(0)
        expect(owner.page.get_by_label("Most open connections (all nodes)")).to_have_count(0)
        expect(quotas.filter(has_text="4,096")).to_have_count(1)
        shot(owner.page, "dash-quotas-owner-1280.png")
        # Posting the form anyway (its CSRF token from the page) is refused.
        token = owner.page.locator("input[name=csrf_token]").first.input_value()
        refused = owner.page.request.post(
            settings.replace("/settings", "/quotas"),
            form={"csrf_token": token, "max_connections": "1000"},
        )
        assert refused.status == 403
        assert "operator sets quotas" in refused.text()
        assert not owner.errors, owner.errors
    finally:
        owner.close()


def test_webhook_test_event_answers_at_once(
    browser: Browser,  # noqa: F811
    nodes: list[ServerProcess],
) -> None:
    """Send test event: the page says at once what the receiver answered, and the attempt
    is listed among the webhook's deliveries (the API's test endpoint does the same)."""
    from playwright.sync_api import expect

    person = Person(browser, nodes[1])
    page = person.page
    person.sign_in(OPERATOR)
    open_project(page)
    with Receiver(statuses=[204, 500]).running() as receiver:
        page.get_by_role("link", name="Webhooks").click()
        page.get_by_label("Receiver URL").fill(receiver.url)
        page.get_by_label("All events, including publications").check()
        page.get_by_role("button", name="Add webhook").click()
        page.get_by_role("link", name=re.compile("Deliveries and settings")).click()
        page.get_by_role("button", name="Send test event").click()
        expect(page.get_by_role("status").first).to_contain_text("The test event is delivered")
        expect(page.get_by_role("cell", name="HTTP 204")).to_be_visible()
        assert receiver.wait_for(1)[0].json()["event"] == "test"
        page.get_by_role("button", name="Send test event").click()
        expect(page.get_by_role("alert")).to_contain_text("was not delivered")
        expect(page.get_by_role("cell", name="HTTP 500")).to_be_visible()
        shot(page, "dash-webhook-test-1280.png")
    assert not person.errors, person.errors
    person.close()


def reveal_secret(page: Page, project: str) -> tuple[str, str]:
    """The project's app ID and app secret, as its owner reveals it on the overview."""
    base = open_project(page, project)
    page.get_by_role("button", name="Reveal app secret").click()
    secret = page.get_by_label("App secret (signs tokens: keep it on your servers)").input_value()
    return base.rsplit("/", 1)[1], secret


def connection_token(node: ServerProcess, app_id: str, secret: str, user: str) -> str:
    """A connection token for `user`, subscribed server-side to public:lobby."""
    minted = httpx.post(
        f"{node.base_url}/api/token",
        json={
            "app_id": app_id,
            "app_secret": secret,
            "payload": {"sub": user, "channels": ["public:lobby"]},
        },
    )
    assert minted.status_code == 200, minted.text
    return str(minted.json()["token"])


def reply_to(ws: object, command_id: int) -> dict[str, object]:
    """The reply to command `command_id`, past the pushes (joins, leaves) sent around it; a
    frame may hold several newline-joined messages."""
    import json

    while True:
        frame = ws.recv(timeout=10)  # type: ignore[attr-defined]
        for line in str(frame).splitlines():
            message = json.loads(line)
            if message.get("id") == command_id:
                return dict(message)


def test_console_shows_the_apps_lifecycle_events_from_every_node(
    browser: Browser,  # noqa: F811
    nodes: list[ServerProcess],
) -> None:
    """The console, served by one node, shows a client of the project connecting to the
    other node, subscribing, unsubscribing and disconnecting, with its user, client ID and
    transport; another project's client shows nothing."""
    import json

    from playwright.sync_api import expect
    from websockets.sync.client import connect

    from tests.support.rawws import ENGINE_PATH

    person = Person(browser, nodes[0])
    page = person.page
    person.sign_in(OPERATOR)
    other_id, other_secret = reveal_secret(page, "Owner's shop")
    app_id, secret = reveal_secret(page, PROJECT)
    page.get_by_role("link", name="Live console").click()
    state = page.get_by_role("status").filter(has_text="Live:")
    expect(state).to_have_text("Live: connections and subscriptions on every node.")
    log = page.get_by_role("list", name="App events, oldest first")

    far = nodes[1].base_url.replace("http", "ws", 1) + ENGINE_PATH
    # First another project's client: were it leaked, it would show before ours does.
    with connect(far) as stranger:
        token = connection_token(nodes[1], other_id, other_secret, "stranger-1")
        stranger.send(json.dumps({"id": 1, "connect": {"token": token}}))
        assert "public:lobby" in reply_to(stranger, 1)["connect"]["subs"]  # type: ignore[index]
        with connect(far) as ws:
            token = connection_token(nodes[1], app_id, secret, "shopper-7")
            ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            client = reply_to(ws, 1)["connect"]["client"]  # type: ignore[index]
            ws.send(json.dumps({"id": 2, "subscribe": {"channel": "public:news"}}))
            assert "error" not in reply_to(ws, 2)
            connected = log.get_by_role("listitem").filter(has_text="connected").first
            expect(connected).to_contain_text(
                f"user shopper-7, client {client}, over websocket", timeout=15_000
            )
            expect(
                log.get_by_role("listitem").filter(has_text="channel public:lobby")
            ).to_contain_text("subscribed")
            news = log.get_by_role("listitem").filter(has_text="channel public:news")
            expect(news).to_contain_text("channel public:news, user shopper-7")
            ws.send(json.dumps({"id": 3, "unsubscribe": {"channel": "public:news"}}))
            assert "error" not in reply_to(ws, 3)
            expect(news.filter(has_text="unsubscribed")).to_have_count(1, timeout=15_000)
        expect(log.get_by_role("listitem").filter(has_text="disconnected")).to_contain_text(
            f"user shopper-7, client {client}", timeout=15_000
        )
    shot(page, "dash-console-app-events-1280.png")
    assert "stranger-1" not in log.inner_text()
    assert not person.errors, person.errors
    person.close()


def test_users_chart_moves_live_with_the_same_figures_as_the_api(
    browser: Browser,  # noqa: F811
    nodes: list[ServerProcess],
) -> None:
    """The overview's Users chart is a line per hour; two users connecting to the other
    node raise its latest point without a reload, to what /api/analytics's series says."""
    import json

    from playwright.sync_api import expect
    from websockets.sync.client import connect

    from tests.support.rawws import ENGINE_PATH

    person = Person(browser, nodes[0])
    page = person.page
    person.sign_in(OPERATOR)
    app_id, secret = reveal_secret(page, PROJECT)
    page.get_by_role("navigation", name="Period").get_by_role("link", name="24h").click()
    users = page.get_by_role("figure").filter(has_text="Users")
    expect(
        users.get_by_role("img", name=re.compile("^Users per hour over the last 24h"))
    ).to_be_visible()
    peak = users.locator("[data-max]")
    before = int(peak.inner_text())

    far = nodes[1].base_url.replace("http", "ws", 1) + ENGINE_PATH
    with connect(far) as one, connect(far) as two:
        for ws, user in ((one, "chart-1"), (two, "chart-2")):
            ws.send(
                json.dumps(
                    {
                        "id": 1,
                        "connect": {"token": connection_token(nodes[1], app_id, secret, user)},
                    }
                )
            )
            assert "connect" in reply_to(ws, 1)
        expect(peak).to_have_text(str(before + 2), timeout=20_000)
        shot(page, "dash-users-chart-1280.png")
        api = httpx.get(
            f"{nodes[1].base_url}/api/analytics",
            params={"period": "24h", "app_id": app_id},
            headers=nodes[1].admin_headers(),
        )
        assert api.status_code == 200, api.text
        series = api.json()["series"]
        assert series[-1]["users"] == before + 2
        assert {"timestamp", "connections", "events", "broadcasts", "users"} <= set(series[-1])
    assert not person.errors, person.errors
    person.close()
