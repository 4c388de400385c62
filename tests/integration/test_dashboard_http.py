"""The dashboard's security seen from outside, with httpx against real nodes: CSRF refused,
cookie flags, sign-out and disabling seen by another node on the same PostgreSQL, invitation
links, and the `xshathra users` commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, running_server
from tests.support.services import postgres_database

PASSWORD = "correct horse battery"


def _token(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert found, f"no {name} in the page"
    return found.group(1)


def sign_up(http: httpx.Client, email: str, invitation: str = "") -> httpx.Response:
    page = http.get("/dashboard/signup", params={"invitation": invitation} if invitation else None)
    form = {
        "form_token": _token(page.text, "form_token"),
        "email": email,
        "password": PASSWORD,
        "confirm_password": PASSWORD,
    }
    if invitation:
        form["invitation"] = invitation
    return http.post("/dashboard/signup", data=form)


def sign_in(http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    page = http.get("/dashboard/login")
    form = {"form_token": _token(page.text, "form_token"), "email": email, "password": password}
    return http.post("/dashboard/login", data=form)


def csrf(http: httpx.Client) -> str:
    return _token(http.get("/dashboard/account").text, "csrf_token")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Two nodes on one PostgreSQL database (the default sign-up policy: invite)."""
    tmp = tmp_path_factory.mktemp("dash")
    with (
        postgres_database() as url,
        running_server(tmp / "a", database_url=url) as a,
        running_server(tmp / "b", database_url=url, admin_key=a.admin_key) as b,
    ):
        yield [a, b]


def test_sign_up_sets_a_safe_cookie_and_csrf_less_posts_are_refused(
    two_nodes: list[ServerProcess],
) -> None:
    """The session cookie is HttpOnly, SameSite=Lax, scoped to /dashboard; a POST without the
    form's token (or with another one) is refused with 403 and changes nothing."""
    a, _ = two_nodes
    with httpx.Client(base_url=a.base_url) as http:
        created = sign_up(http, "csrf-owner@example.com")
        assert created.status_code == 303, created.text
        cookie = created.headers["set-cookie"]
        assert cookie.startswith("xs_session=")
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
        assert "Path=/dashboard" in cookie and "Secure" not in cookie  # plain HTTP here
        assert "unsafe-inline" not in created.headers["content-security-policy"]

        # Sign-out without the token: refused, the session still works.
        refused = http.post("/dashboard/logout", data={})
        assert refused.status_code == 403 and "cannot be accepted" in refused.text
        wrong = http.post("/dashboard/logout", data={"csrf_token": "forged"})
        assert wrong.status_code == 403
        as_json = http.post("/dashboard/invitations", json={"csrf_token": csrf(http)})
        assert as_json.status_code == 403
        assert http.get("/dashboard/projects").status_code == 200

        # Sign-in forms need their own token too (login CSRF).
        stranger = httpx.post(
            f"{a.base_url}/dashboard/login", data={"email": "x@example.com", "password": "y"}
        )
        assert stranger.status_code == 403


def test_sign_out_on_one_node_ends_the_session_on_the_other(
    two_nodes: list[ServerProcess],
) -> None:
    """Sessions live in the database: a session made on A works on B, and signing out on A
    ends it on B at once."""
    a, b = two_nodes
    with httpx.Client(base_url=a.base_url) as on_a, httpx.Client(base_url=b.base_url) as on_b:
        assert sign_in(on_a, "csrf-owner@example.com").status_code == 303
        on_b.cookies.set("xs_session", on_a.cookies["xs_session"], path="/dashboard")
        assert on_b.get("/dashboard/projects").status_code == 200
        assert on_a.post("/dashboard/logout", data={"csrf_token": csrf(on_a)}).status_code == 303
        ended = on_b.get("/dashboard/projects")
        assert ended.status_code == 303
        assert ended.headers["location"] == "/dashboard/login?done=ended"

        # "Sign out other sessions" on B ends A's session and keeps B's.
        assert sign_in(on_a, "csrf-owner@example.com").status_code == 303
        assert sign_in(on_b, "csrf-owner@example.com").status_code == 303
        done = on_b.post("/dashboard/account/sessions", data={"csrf_token": csrf(on_b)})
        assert done.headers["location"] == "/dashboard/account?done=sessions"
        assert on_b.get("/dashboard/projects").status_code == 200
        assert on_a.get("/dashboard/projects").status_code == 303


def test_invitation_link_works_once_and_disabling_ends_sessions_everywhere(
    two_nodes: list[ServerProcess],
) -> None:
    """Without an invitation sign-up is refused; an invitation made on A signs up one account
    on B; disabling it on A ends its session on B and refuses its sign-in."""
    a, b = two_nodes
    with httpx.Client(base_url=a.base_url) as op, httpx.Client(base_url=b.base_url) as member:
        assert sign_in(op, "csrf-owner@example.com").status_code == 303
        page = member.get("/dashboard/signup")
        assert page.status_code == 403 and "Ask its operator for an invitation" in page.text
        assert 'name="password"' not in page.text  # no form that could not work
        form_token = _token(member.get("/dashboard/login").text, "form_token")
        refused = member.post(
            "/dashboard/signup",
            data={
                "form_token": form_token,
                "email": "member@example.com",
                "password": PASSWORD,
                "confirm_password": PASSWORD,
            },
        )
        assert refused.status_code == 403 and "invitation" in refused.text

        made = op.post("/dashboard/invitations", data={"csrf_token": csrf(op)})
        assert made.status_code == 303  # POST/redirect/GET: a reload makes no second one
        assert "invitation=" not in made.headers["location"]
        shown = op.get(made.headers["location"])
        link = re.search(r'id="invitation-link" type="text" readonly value="([^"]+)"', shown.text)
        reloaded = op.get(made.headers["location"]).text
        assert 'id="invitation-link"' not in reloaded  # shown once
        assert link and link.group(1).startswith(f"{a.base_url}/dashboard/signup?invitation=")
        token = link.group(1).rsplit("=", 1)[1]
        assert sign_up(member, "member@example.com", token).status_code == 303
        assert member.get("/dashboard/projects").status_code == 200
        assert member.get("/dashboard/accounts").status_code == 404  # operator only
        with httpx.Client(base_url=b.base_url) as third:
            again = sign_up(third, "third@example.com", token)
            assert again.status_code == 403 and "used, revoked or expired" in again.text

        accounts = op.get("/dashboard/accounts").text
        account_id = re.search(r'/dashboard/accounts/([\w]+)/disable"', accounts)
        assert account_id
        disabled = op.post(
            f"/dashboard/accounts/{account_id.group(1)}/disable", data={"csrf_token": csrf(op)}
        )
        assert disabled.status_code == 303
        assert member.get("/dashboard/projects").status_code == 303
        with httpx.Client(base_url=b.base_url) as retry:
            refused_sign_in = sign_in(retry, "member@example.com")
            assert refused_sign_in.status_code == 400 and "disabled" in refused_sign_in.text


def test_operator_sees_apps_made_by_the_api(two_nodes: list[ServerProcess]) -> None:
    """An application created with the admin API is listed to the operator."""
    a, b = two_nodes
    app = a.create_app(name="Made <by> the API")
    with httpx.Client(base_url=b.base_url) as op:
        assert sign_in(op, "csrf-owner@example.com").status_code == 303
        page = op.get("/dashboard/projects").text
        assert str(app["app_id"]) in page
        assert "Made &lt;by&gt; the API" in page and "No owner (API or CLI)" in page


def _cli(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XSHATHRA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "xshathra", *args],
        env=env,
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_users_create_and_reset_password_from_the_shell(tmp_path: Path) -> None:
    """`users create` makes an account that can sign in; `users reset-password` sets a new
    password and ends the account's sessions."""
    made = _cli(
        tmp_path,
        "users",
        "create",
        "Ops@Example.com",
        "--operator",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    assert "Created account ops@example.com (operator)" in made.stdout
    short = _cli(tmp_path, "users", "create", "x@example.com", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    no_tty = _cli(tmp_path, "users", "create", "y@example.com")
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr

    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    with (
        running_server(tmp_path, database_url=db_url) as node,
        httpx.Client(base_url=node.base_url) as http,
    ):
        assert sign_in(http, "ops@example.com").status_code == 303
        assert "Accounts" in http.get("/dashboard/projects").text
        reset = _cli(
            tmp_path,
            "users",
            "reset-password",
            "ops@example.com",
            "--password-stdin",
            stdin="a new long password\n",
        )
        assert reset.returncode == 0, reset.stderr
        assert "1 session(s) ended" in reset.stdout
        assert http.get("/dashboard/projects").status_code == 303
        assert sign_in(http, "ops@example.com").status_code == 400
        assert sign_in(http, "ops@example.com", "a new long password").status_code == 303
    missing = _cli(
        tmp_path,
        "users",
        "reset-password",
        "nobody@example.com",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert missing.returncode == 1 and "no account" in missing.stderr
