"""The dashboard's routes: sign-up, sign-in, sign-out, the account page, the operator's
Accounts page and the Projects page.

Every page is a server-rendered form that works without JavaScript. Every POST is checked for
its CSRF token before anything else happens; every change ends in a redirect (or a page that
shows what was just made), so a reload never repeats it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from xshathra import __version__
from xshathra.accounts.models import Account, Session
from xshathra.accounts.service import (
    AccountService,
    FieldError,
    NotAllowedError,
    SignupPolicy,
    SignupRefusedError,
    ThrottledError,
    check_email,
    check_new_password,
    hash_token,
)
from xshathra.analytics import AnalyticsReader
from xshathra.dashboard.console_stream import LifecycleSource
from xshathra.dashboard.projects import DONE as PROJECT_DONE
from xshathra.dashboard.projects import ProjectPages, TestPublisher
from xshathra.dashboard.security import (
    FORM_COOKIE,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    FormError,
    clear_cookie,
    clear_flash,
    new_token,
    read_flash,
    read_form,
    same_token,
    set_cookie,
    set_flash,
)
from xshathra.tenancy.apps import AppSummary
from xshathra.tenancy.service import ApplicationService
from xshathra.tenancy.tokens import TokenService

BASE = "/dashboard"
FORM_COOKIE_AGE = 12 * 3600
STATIC_FILES = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "console.js": "text/javascript",
}

Signed = tuple[Session, Account]
PAGE_SIZE = 100  # projects per page of the list

# Fixed messages for `?done=` after a redirect: nothing a person typed goes into a URL.
DONE = {
    "signed_out": "You are signed out.",
    "ended": "Your session has ended. Sign in again.",
    "password": "Your password is changed. Your other sessions are signed out.",
    "sessions": "Your other sessions are signed out.",
    "disabled": "The account is disabled and its sessions are ended.",
    "enabled": "The account is enabled. It can sign in again.",
    "revoked": "The invitation is revoked.",
    "invited": "The invitation link was shown once, when it was made: it is listed below.",
    "deleted": PROJECT_DONE["deleted"],
}


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else ""


class Dashboard:
    """The pages, over the account service and the application service."""

    def __init__(
        self,
        accounts: AccountService,
        apps: ApplicationService,
        *,
        session_ttl: int,
        tokens: TokenService,
        analytics: AnalyticsReader,
        publisher: TestPublisher | None = None,
        public_url: str = "",
        lifecycle: LifecycleSource | None = None,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.accounts = accounts
        self.apps = apps
        self.session_ttl = session_ttl
        self.templates = Environment(
            loader=PackageLoader("xshathra.dashboard", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = _when
        self.templates.globals.update(base=BASE, version=__version__)
        self.static = {
            name: resources.files("xshathra.dashboard").joinpath("static", name).read_bytes()
            for name in STATIC_FILES
        }
        self.projects_pages = ProjectPages(self, apps, tokens, analytics, publisher, lifecycle)
        self.app = Starlette(
            routes=[
                *self.projects_pages.routes(),
                Route("/", self.index, methods=["GET"]),
                Route("/login", self.login, methods=["GET", "POST"]),
                Route("/signup", self.signup, methods=["GET", "POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/projects", self.projects, methods=["GET"]),
                Route("/account", self.account, methods=["GET"]),
                Route("/account/password", self.change_password, methods=["POST"]),
                Route("/account/sessions", self.end_other_sessions, methods=["POST"]),
                Route("/accounts", self.accounts_page, methods=["GET"]),
                Route("/accounts/{account_id}/disable", self.disable, methods=["POST"]),
                Route("/accounts/{account_id}/enable", self.enable, methods=["POST"]),
                Route("/invitations", self.invite, methods=["POST"]),
                Route("/invitations/{invitation_id}/revoke", self.revoke, methods=["POST"]),
                Route("/static/{name}", self.static_file, methods=["GET"]),
            ],
            exception_handlers={404: self._not_found, 405: self._not_allowed},
        )

    # -- rendering ----------------------------------------------------------------------------

    def page(
        self, template: str, *, status: int = 200, signed: Signed | None = None, **context: Any
    ) -> HTMLResponse:
        if signed is not None:
            context.update(me=signed[1], csrf=signed[0].csrf_token)
        html = self.templates.get_template(template).render(**context)
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        return HTMLResponse(html, status_code=status, headers=headers)

    def refuse(
        self, status: int, title: str, message: str, signed: Signed | None = None
    ) -> Response:
        return self.page("error.html", status=status, signed=signed, title=title, message=message)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        signed = await self._signed(request)
        return self.refuse(404, "Page not found", "There is no page at this address.", signed)

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return self.refuse(405, "Not allowed", "This page does not accept that request.")

    def origin(self, request: Request) -> str:
        """Where links to this server point: XSHATHRA_PUBLIC_URL, else the request's own."""
        return self.public_url or f"{request.url.scheme}://{request.url.netloc}"

    def redirect(self, path: str) -> Response:
        return RedirectResponse(BASE + path, status_code=303, headers=SECURITY_HEADERS)

    # -- who is asking ------------------------------------------------------------------------

    async def _signed(self, request: Request) -> Signed | None:
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            return None
        return await self.accounts.session(session_id)

    async def _require(self, request: Request) -> Signed | Response:
        """The signed-in session, or the response that sends the person to sign in."""
        signed = await self._signed(request)
        if signed is not None:
            return signed
        ended = bool(request.cookies.get(SESSION_COOKIE))
        response = self.redirect("/login" + ("?done=ended" if ended else ""))
        if ended:
            clear_cookie(response, request, SESSION_COOKIE)
        return response

    async def _signed_form(self, request: Request) -> tuple[Signed, dict[str, str]] | Response:
        """A signed-in POST's session and fields, after its CSRF token is checked."""
        signed = await self._require(request)
        if isinstance(signed, Response):
            return signed
        try:
            form = await read_form(request)
        except FormError:
            return self._csrf_refused(signed)
        if not same_token(form.get("csrf_token"), signed[0].csrf_token):
            return self._csrf_refused(signed)
        return signed, form

    def _csrf_refused(self, signed: Signed | None = None) -> Response:
        return self.refuse(
            403,
            "This form cannot be accepted",
            "The form was not sent from this dashboard, or it has expired. Go back, reload "
            "the page and send it again.",
            signed,
        )

    # -- signed-out forms (sign in, sign up) --------------------------------------------------

    def _anonymous_page(
        self, request: Request, template: str, *, status: int = 200, **context: Any
    ) -> Response:
        token = request.cookies.get(FORM_COOKIE) or new_token()
        response = self.page(template, status=status, form_token=token, **context)
        if request.cookies.get(FORM_COOKIE) != token:
            set_cookie(response, request, FORM_COOKIE, token, FORM_COOKIE_AGE)
        return response

    async def _anonymous_form(self, request: Request) -> dict[str, str] | None:
        try:
            form = await read_form(request)
        except FormError:
            return None
        if not same_token(form.get("form_token"), request.cookies.get(FORM_COOKIE)):
            return None
        return form

    async def _signed_in(self, request: Request, session_id: str) -> Response:
        # A session this browser had before (another account's, say) ends here rather than
        # lingering in the database until it expires.
        previous = request.cookies.get(SESSION_COOKIE)
        if previous:
            await self.accounts.sign_out(previous)
        response = self.redirect("/projects")
        set_cookie(response, request, SESSION_COOKIE, session_id, self.session_ttl)
        return response

    # -- pages --------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return self.redirect("/projects" if await self._signed(request) else "/login")

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            if await self._signed(request) is not None:
                return self.redirect("/projects")
            return self._anonymous_page(
                request,
                "login.html",
                done=DONE.get(request.query_params.get("done", "")),
                signup_open=await self.accounts.signup_open(),
                values={},
                errors={},
            )
        form = await self._anonymous_form(request)
        if form is None:
            return self._csrf_refused()
        email = form.get("email", "")
        ip = request.client.host if request.client else ""
        try:
            signed = await self.accounts.sign_in(email, form.get("password", ""), ip)
        except FieldError as exc:
            return self._anonymous_page(
                request,
                "login.html",
                status=400,
                values={"email": email},
                errors={exc.field: exc.message},
                signup_open=await self.accounts.signup_open(),
            )
        except ThrottledError as exc:
            response = self._anonymous_page(
                request,
                "login.html",
                status=429,
                values={"email": email},
                errors={},
                alert=exc.message,
                signup_open=await self.accounts.signup_open(),
            )
            wait = int((exc.retry_at - self.accounts.now()).total_seconds())
            response.headers["Retry-After"] = str(max(1, wait))
            return response
        return await self._signed_in(request, signed.session_id)

    async def signup(self, request: Request) -> Response:
        first = await self.accounts.store.count_accounts() == 0
        policy = self.accounts.signup
        if request.method == "GET":
            if await self._signed(request) is not None:
                return self.redirect("/projects")
            invitation = request.query_params.get("invitation", "")
            return self._signup_page(request, first, policy, invitation, {}, {})
        form = await self._anonymous_form(request)
        if form is None:
            return self._csrf_refused()
        invitation = form.get("invitation", "")
        email, password = form.get("email", ""), form.get("password", "")
        errors: dict[str, str] = {}
        try:
            check_email(email)
        except FieldError as exc:
            errors[exc.field] = exc.message
        try:
            check_new_password(password)
        except FieldError as exc:
            errors[exc.field] = exc.message
        if "password" not in errors and password != form.get("confirm_password", ""):
            errors["confirm_password"] = "Type the same password twice."
        if not errors:
            try:
                signed = await self.accounts.sign_up(email, password, invitation or None)
            except FieldError as exc:
                errors[exc.field] = exc.message
            except SignupRefusedError as exc:
                return self._signup_page(
                    request,
                    first,
                    policy,
                    invitation,
                    {"email": email},
                    {},
                    alert=str(exc),
                    status=403,
                )
            else:
                if invitation:
                    # Projects that invited this person by email are theirs now.
                    await self.apps.claim_invitation(
                        hash_token(invitation), signed.account.account_id, signed.account.email
                    )
                return await self._signed_in(request, signed.session_id)
        return self._signup_page(
            request, first, policy, invitation, {"email": email}, errors, status=400
        )

    def _signup_page(
        self,
        request: Request,
        first: bool,
        policy: SignupPolicy,
        invitation: str,
        values: dict[str, str],
        errors: dict[str, str],
        *,
        alert: str | None = None,
        status: int = 200,
    ) -> Response:
        refused = None
        if not first and policy is SignupPolicy.CLOSED:
            refused = "Sign-up is closed on this server. Ask its operator to create your account."
        elif not first and policy is SignupPolicy.INVITE and not invitation:
            refused = (
                "This server signs people up by invitation. Ask its operator for an "
                "invitation link, then open it to sign up."
            )
        return self._anonymous_page(
            request,
            "signup.html",
            status=403 if refused and status == 200 else status,
            first=first,
            refused=refused,
            invitation=invitation,
            values=values,
            errors=errors,
            alert=alert,
        )

    async def logout(self, request: Request) -> Response:
        checked = await self._signed_form(request)
        if isinstance(checked, Response):
            return checked
        session_id = request.cookies.get(SESSION_COOKIE, "")
        await self.accounts.sign_out(session_id)
        response = self.redirect("/login?done=signed_out")
        clear_cookie(response, request, SESSION_COOKIE)
        return response

    async def projects(self, request: Request) -> Response:
        signed = await self._require(request)
        if isinstance(signed, Response):
            return signed
        return await self.projects_page(
            request, signed, done=DONE.get(request.query_params.get("done", ""))
        )

    async def projects_page(
        self, request: Request, signed: Signed, *, status: int = 200, **context: Any
    ) -> Response:
        """The account's projects with its role on each; the operator sees every app (those
        made with the API or the CLI too) in one list. Filtered by `?q=` (name or app ID) and
        shown PAGE_SIZE at a time (`?page=`), so a server with thousands stays fast to read."""
        me = signed[1]
        if me.operator:
            rows: list[tuple[AppSummary, str]] = [
                (a, "owner") for a in await self.apps.list_summaries()
            ]
            owners = {a.account_id: a.email for a in await self.accounts.list_accounts()}
        else:
            rows = [(a, r.value) for a, r in await self.apps.projects_of(me.account_id)]
            owners = {}
        total = len(rows)
        query = request.query_params.get("q", "").strip()[:200]
        if query:
            needle = query.lower()
            rows = [r for r in rows if needle in r[0].name.lower() or needle in r[0].app_id]
        pages = max(1, -(-len(rows) // PAGE_SIZE))
        try:
            page = min(max(1, int(request.query_params.get("page", "1"))), pages)
        except ValueError:
            page = 1
        context.setdefault("values", {})
        context.setdefault("errors", {})
        return self.page(
            "projects.html",
            status=status,
            signed=signed,
            rows=rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
            matched=len(rows),
            total=total,
            first=(page - 1) * PAGE_SIZE + 1,
            page=page,
            pages=pages,
            query=query,
            owners=owners,
            **context,
        )

    async def account(self, request: Request) -> Response:
        signed = await self._require(request)
        if isinstance(signed, Response):
            return signed
        return self.page(
            "account.html",
            signed=signed,
            errors={},
            done=DONE.get(request.query_params.get("done", "")),
        )

    async def change_password(self, request: Request) -> Response:
        checked = await self._signed_form(request)
        if isinstance(checked, Response):
            return checked
        signed, form = checked
        try:
            await self.accounts.change_password(
                signed[1],
                form.get("current_password", ""),
                form.get("new_password", ""),
                form.get("confirm_password", ""),
                keep_session=request.cookies.get(SESSION_COOKIE, ""),
            )
        except FieldError as exc:
            return self.page(
                "account.html", status=400, signed=signed, errors={exc.field: exc.message}
            )
        return self.redirect("/account?done=password")

    async def end_other_sessions(self, request: Request) -> Response:
        checked = await self._signed_form(request)
        if isinstance(checked, Response):
            return checked
        signed, _ = checked
        await self.accounts.sign_out_others(signed[1], request.cookies.get(SESSION_COOKIE, ""))
        return self.redirect("/account?done=sessions")

    async def accounts_page(self, request: Request) -> Response:
        signed = await self._require(request)
        if isinstance(signed, Response):
            return signed
        if not signed[1].operator:
            return self.refuse(404, "Page not found", "There is no page at this address.", signed)
        shown: dict[str, Any] = {}
        flashed = read_flash(request)
        if flashed:
            # Only a live invitation's link is shown (a stale or forged cookie shows nothing).
            wanted = hash_token(flashed)
            for invitation in await self.accounts.list_invitations():
                if invitation.token_hash == wanted and invitation.used_at is None:
                    link = f"{self.origin(request)}{BASE}/signup?invitation={flashed}"
                    shown = {"new_link": link, "new_invitation": invitation}
        response = await self._accounts_page(
            request,
            signed,
            done=None if shown else DONE.get(request.query_params.get("done", "")),
            **shown,
        )
        if flashed is not None:
            clear_flash(response, request, f"{BASE}/accounts")
        return response

    async def _accounts_page(
        self, request: Request, signed: Signed, *, status: int = 200, **context: Any
    ) -> Response:
        accounts = await self.accounts.list_accounts()
        emails = {a.account_id: a.email for a in accounts}
        return self.page(
            "accounts.html",
            status=status,
            signed=signed,
            accounts=accounts,
            emails=emails,
            invitations=await self.accounts.list_invitations(),
            now=self.accounts.now(),
            policy=self.accounts.signup.value,
            **context,
        )

    async def _operator_action(
        self, request: Request, action: Callable[[Account], Awaitable[str]]
    ) -> Response:
        checked = await self._signed_form(request)
        if isinstance(checked, Response):
            return checked
        signed, _ = checked
        if not signed[1].operator:
            return self.refuse(404, "Page not found", "There is no page at this address.", signed)
        try:
            done = await action(signed[1])
        except NotAllowedError as exc:
            return await self._accounts_page(request, signed, status=400, alert=str(exc))
        return self.redirect(f"/accounts?done={done}")

    async def disable(self, request: Request) -> Response:
        account_id = request.path_params["account_id"]

        async def act(me: Account) -> str:
            await self.accounts.set_disabled(me, account_id, True)
            return "disabled"

        return await self._operator_action(request, act)

    async def enable(self, request: Request) -> Response:
        account_id = request.path_params["account_id"]

        async def act(me: Account) -> str:
            await self.accounts.set_disabled(me, account_id, False)
            return "enabled"

        return await self._operator_action(request, act)

    async def revoke(self, request: Request) -> Response:
        invitation_id = request.path_params["invitation_id"]

        async def act(me: Account) -> str:
            await self.accounts.revoke_invitation(me, invitation_id)
            return "revoked"

        return await self._operator_action(request, act)

    async def invite(self, request: Request) -> Response:
        checked = await self._signed_form(request)
        if isinstance(checked, Response):
            return checked
        signed, _ = checked
        if not signed[1].operator:
            return self.refuse(404, "Page not found", "There is no page at this address.", signed)
        _, token = await self.accounts.create_invitation(signed[1])
        # POST/redirect/GET: the token reaches the Accounts page in a read-once cookie (it is
        # stored hashed, so this is the only time it can be shown), so a reload of that page
        # makes no second invitation and never puts the token in a URL.
        response = self.redirect("/accounts?done=invited")
        set_flash(response, request, f"{BASE}/accounts", token)
        return response

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.static:
            return await self._not_found(request, HTTPException(404))
        return Response(
            self.static[name],
            media_type=f"{STATIC_FILES[name]}; charset=utf-8",
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )


def create_dashboard(
    accounts: AccountService,
    apps: ApplicationService,
    *,
    session_ttl: int,
    tokens: TokenService,
    analytics: AnalyticsReader,
    publisher: TestPublisher | None = None,
    public_url: str = "",
    lifecycle: LifecycleSource | None = None,
) -> Dashboard:
    """The dashboard; mount `.app` at /dashboard and route /dashboard itself to `.index`.
    `public_url` (XSHATHRA_PUBLIC_URL) is where invitation links point when set;
    `publisher` publishes the live console's test messages; `lifecycle` (the node) tells
    its app-wide stream the apps' lifecycle events."""
    return Dashboard(
        accounts,
        apps,
        session_ttl=session_ttl,
        tokens=tokens,
        analytics=analytics,
        publisher=publisher,
        public_url=public_url,
        lifecycle=lifecycle,
    )
