"""The dashboard in Debian's Chromium, driven by Playwright as a person would: by visible
labels and button names. One server and one browser for the module; the tests run in order
(the first sign-up makes the operator the later ones use)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.test_socket_auth_page import ARGS, CHROMIUM
from tests.support.server import ServerProcess, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

SCREENSHOT_DIR = Path(os.environ.get("XSHATHRA_SCREENSHOT_DIR", "/tmp"))
OPERATOR = "operator@example.com"
MEMBER = "member@example.com"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node with the default sign-up policy (invite)."""
    with running_server(tmp_path_factory.mktemp("dashboard")) as proc:
        yield proc


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


class Person:
    """One browser context (its own cookies) and page, with what the console said."""

    def __init__(self, browser: Browser, node: ServerProcess, width: int = 1280) -> None:
        self.context: BrowserContext = browser.new_context(
            viewport={"width": width, "height": 900}, base_url=node.base_url
        )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: ConsoleMessage) -> None:
        """Errors only; a page answered with 4xx on purpose (a form to fix, a throttled
        sign-in) is reported by Chromium too, and is not one: its static files still count."""
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and "/static/" not in url:
            return
        self.errors.append(f"{message.text} ({url})")

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        page = self.page
        page.goto("/dashboard/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def person(browser: Browser, node: ServerProcess) -> Iterator[Person]:
    p = Person(browser, node)
    try:
        yield p
    finally:
        assert not p.errors, p.errors  # a CSP violation or a script error shows up here
        p.close()


def test_first_sign_up_makes_the_operator_then_sign_out_and_in(person: Person) -> None:
    """/ leads to sign-in; the first account signs up and becomes operator; sign-out works;
    a wrong password is reported beside the password field; the right one signs in."""
    from playwright.sync_api import expect

    page = person.page
    page.goto("/")
    expect(page).to_have_url(f"{page.context.pages[0].url.split('/dashboard')[0]}/dashboard/login")
    page.get_by_role("link", name="Create an account").click()
    expect(page.get_by_role("heading", name="Create the operator account")).to_be_visible()
    page.get_by_label("Email").fill(OPERATOR)
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Confirm password").fill("short")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#password-error")).to_have_text("Use at least 10 characters.")
    expect(page.get_by_label("Email")).to_have_value(OPERATOR)  # kept, not retyped

    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Accounts")).to_be_visible()  # the operator's page

    cookie = next(c for c in person.context.cookies() if c["name"] == "xs_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/dashboard/projects")
    expect(page.get_by_role("heading", name="Sign in to Xshathra")).to_be_visible()

    person.sign_in(OPERATOR, "not the password")
    password = page.get_by_label("Password")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#password-error")).to_contain_text("The email or password is wrong")
    assert "password-error" in (password.get_attribute("aria-describedby") or "")
    page.screenshot(path=str(SCREENSHOT_DIR / "dash-login-error-1280.png"), full_page=True)

    # By keyboard alone: the email field has focus, Tab to the password, Enter sends.
    page.get_by_label("Email").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type(OPERATOR)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()


def test_sign_in_is_throttled_with_a_time_to_retry(person: Person) -> None:
    """After 5 wrong passwords an account is refused for 15 minutes, and the page says so."""
    from playwright.sync_api import expect

    for _ in range(5):
        person.sign_in("victim@example.com", "guess guess guess")
        expect(person.page.locator("#password-error")).to_be_visible()
    person.sign_in("victim@example.com", "guess guess guess")
    alert = person.page.get_by_role("alert")
    expect(alert).to_contain_text("Too many failed sign-ins for this account.")
    expect(alert).to_contain_text("Try again in 15 minutes")


def test_invitation_sign_up_and_disabling_ends_the_session(
    browser: Browser, node: ServerProcess, person: Person
) -> None:
    """Without an invitation sign-up is refused; the operator's invitation link signs up a
    member; the operator disables the member, whose next page sends them to sign in."""
    from playwright.sync_api import expect

    member = Person(browser, node)
    try:
        member.page.goto("/dashboard/signup")
        expect(member.page.get_by_role("alert")).to_contain_text(
            "Ask its operator for an invitation link"
        )
        expect(member.page.get_by_label("Email")).to_have_count(0)

        operator = person.page
        person.sign_in(OPERATOR)
        operator.get_by_role("link", name="Accounts").click()
        operator.get_by_role("button", name="Create invitation link").click()
        link = operator.get_by_label("New invitation link").input_value()
        assert "/dashboard/signup?invitation=" in link

        member.page.goto(link)
        expect(member.page.get_by_role("heading", name="Create your account")).to_be_visible()
        member.page.get_by_label("Email").fill(MEMBER)
        member.page.get_by_label("Password", exact=True).fill(PASSWORD)
        member.page.get_by_label("Confirm password").fill(PASSWORD)
        member.page.get_by_role("button", name="Create account").click()
        expect(member.page.get_by_text("Your account owns no projects yet.")).to_be_visible()
        expect(member.page.get_by_role("link", name="Accounts")).to_have_count(0)

        operator.reload()
        expect(operator.get_by_role("cell", name=f"Used by {MEMBER}")).to_be_visible()
        operator.get_by_role("button", name=f"Disable {MEMBER}").click()
        expect(operator.get_by_role("status")).to_contain_text("The account is disabled")

        member.page.reload()
        expect(member.page.get_by_role("status")).to_have_text(
            "Your session has ended. Sign in again."
        )
        member.sign_in(MEMBER)
        expect(member.page.locator("#email-error")).to_contain_text("This account is disabled")

        operator.get_by_role("button", name=f"Enable {MEMBER}").click()
        member.sign_in(MEMBER)
        expect(member.page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
        assert not member.errors, member.errors
    finally:
        member.close()


def test_pages_fit_desktop_and_phone(browser: Browser, node: ServerProcess) -> None:
    """Sign-in, Projects, Accounts and the account page at 1280 px and 375 px: nothing wider
    than the screen, no console errors; screenshots for a person to look at."""
    for i in range(3):
        node.create_app(name=f"Storefront {i}" if i else "A project with a rather long name")
    for width in (1280, 375):
        visitor = Person(browser, node, width)
        try:
            page = visitor.page
            page.goto("/dashboard/login")
            page.screenshot(path=str(SCREENSHOT_DIR / f"dash-login-{width}.png"), full_page=True)
            visitor.sign_in(OPERATOR)
            for name in ("projects", "accounts", "account"):
                page.goto(f"/dashboard/{name}")
                page.screenshot(
                    path=str(SCREENSHOT_DIR / f"dash-{name}-{width}.png"), full_page=True
                )
                overflow = page.evaluate(
                    "() => document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 0, f"{name} is {overflow}px wider than {width}px"
            assert not visitor.errors, visitor.errors
        finally:
            visitor.close()
