"""The dashboard's project pages: create, overview (keys, analytics, connecting), settings and
namespaces, webhooks, the live console and members.

Every route finds the project through the application service and the signed-in account's
role on it; a project that is not the account's answers 404 (never 403), so its id tells a
stranger nothing. A member whose role does not allow an action is refused with 403. Secrets
(the server key once, the app secret on request, webhook secrets once) appear only in the
answer of a POST made by an owner or developer, never in a URL, never for a viewer.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from xshathra.accounts.service import NotAllowedError, hash_token
from xshathra.analytics import PERIODS, AnalyticsReader
from xshathra.dashboard.charts import CHARTS, HEIGHT, WIDTH, chart_data
from xshathra.dashboard.console_stream import ConsoleStream, LifecycleSource
from xshathra.dashboard.proxy_pages import ProxyPages
from xshathra.dashboard.security import (
    SECURITY_HEADERS,
    clear_flash,
    read_flash,
    set_flash,
)
from xshathra.protocol.codes import LifecycleEvent
from xshathra.tenancy.apps import (
    APP_ID_PATTERN,
    MAX_QUOTA,
    NamespaceOptions,
    NewAppKeys,
    hash_key,
)
from xshathra.tenancy.apps import Application as App
from xshathra.tenancy.members import Role
from xshathra.tenancy.service import ApplicationService, AppUpdate, ServiceError
from xshathra.tenancy.tokens import TokenService

if TYPE_CHECKING:
    from xshathra.dashboard.app import Dashboard, Signed

BASE = "/dashboard"
CONSOLE_TOKEN_TTL = 300  # seconds: the console's connection token, re-minted on reconnect
MAX_TEST_MESSAGE = 8 * 1024
# How long tokens signed with a replaced app secret keep verifying, as the form offers it
# (the service accepts 0 to 30 days; the API takes any number of seconds in that range).
SECRET_GRACE = {
    "0": "None: stop the old secret now",
    "3600": "1 hour",
    "86400": "24 hours",
    "604800": "7 days",
    "2592000": "30 days",
}
# Namespace options as the form shows them: booleans as checkboxes, the rest as numbers.
# The proxy switches are chosen with a select per kind (PROXY_KINDS); the options the form
# does not show (delta types, recovery mode: set with the API) are kept as stored.
PROXY_KINDS = ("subscribe", "publish", "sub_refresh")
_PROXY_OPTIONS = {f"{k}_proxy_{x}" for k in PROXY_KINDS for x in ("enabled", "name")}
BOOL_OPTIONS = [
    name
    for name in NamespaceOptions.__struct_fields__
    if isinstance(getattr(NamespaceOptions(), name), bool) and name not in _PROXY_OPTIONS
]
INT_OPTIONS = [
    n
    for n in NamespaceOptions.__struct_fields__
    if type(getattr(NamespaceOptions(), n)) is int  # a bool is an int too: not those
]
# Options the form does not show as a box, a number or a proxy choice (lists, the recovery
# mode): kept as they are.
OTHER_OPTIONS = [
    n
    for n in NamespaceOptions.__struct_fields__
    if n not in BOOL_OPTIONS and n not in INT_OPTIONS and n not in _PROXY_OPTIONS
]
# What each option lets happen, in words (the option's own name is shown beside it).
OPTION_LABELS = {
    "presence": "Presence: who is in a channel",
    "join_leave": "Join and leave events",
    "force_push_join_leave": "Push join and leave to every subscriber",
    "history_size": "History size (publications kept per channel)",
    "history_ttl": "History lifetime (seconds)",
    "force_recovery": "Always recover missed publications",
    "allow_subscribe_for_client": "Clients may subscribe without a subscription token",
    "allow_publish_for_subscriber": "Subscribers may publish",
    "allow_publish_for_client": "Any connected client may publish",
    "allow_presence_for_subscriber": "Subscribers may read presence",
    "allow_history_for_subscriber": "Subscribers may read history",
    "delta_publish": "Send publications as deltas where negotiated",
    "allow_positioning": "Subscribers may ask for positioning",
    "force_positioning": "Every subscription is positioned",
    "allow_tags_filter": "Subscribers may filter publications by tags",
}
# The operator's quotas (SPEC §11), as the admin API names them; empty: the server's limit.
QUOTA_LABELS = {
    "max_connections": "Most open connections (all nodes)",
    "max_connections_per_user": "Most connections of one user",
    "max_channels_per_connection": "Most channels per connection",
    "max_message_size": "Largest publication (bytes)",
    "rate_limit_ceiling": "Highest rate limit the project's key may set",
}
PROXY_LABELS = {
    "subscribe": "Subscribe proxy",
    "publish": "Publish proxy",
    "sub_refresh": "Subscription refresh proxy",
}
WEBHOOK_EVENTS = [e.value for e in LifecycleEvent]

DONE = {
    "settings": "The settings are saved.",
    "quotas": "The quotas are saved. They hold on every node from now on.",
    "namespace": "The namespace is saved.",
    "namespace_deleted": "The namespace is deleted.",
    "webhook": "The webhook is saved.",
    "webhook_added": "The webhook is added.",
    "created": "Your project is created.",
    "regenerated": "A new server key is made: the old one no longer works.",
    "client_key_regenerated": "A new client key is made: clients using the old one can no "
    "longer connect. Put the new one in your apps.",
    "secret_regenerated": "A new app secret is made: tokens signed with the old one no "
    "longer verify. Reveal the new one below and put it on your servers.",
    "secret_regenerated_grace": "A new app secret is made: tokens signed with the old one "
    "keep verifying until the time shown below. Reveal the new one and put it on your servers.",
    "webhook_enabled": "The webhook is enabled.",
    "webhook_disabled": "The webhook is disabled: it gets no events until you enable it.",
    "webhook_deleted": "The webhook is deleted.",
    "test_delivered": "The test event is delivered: your receiver answered with a 2xx status.",
    "test_failed": "The test event was not delivered: see its answer in Recent deliveries "
    "below, fix the receiver or the URL and send it again.",
    "replayed": "The delivery is queued again.",
    "role": "The role is changed.",
    "removed": "The member is removed from the project.",
    "member_added": "The member is added. The project is on their Projects page.",
    "member_invited": "The invitation link was shown once, when it was made. Remove the "
    "member and add them again for a new link.",
    "deleted": "The project is deleted. Its keys no longer work.",
    "published": "The test message is published.",
    "proxy": "The proxy is saved.",
    "proxy_deleted": "The proxy is deleted.",
    "client_proxies": "The connection proxies are saved.",
    "rpc": "The RPC namespace is saved.",
    "rpc_deleted": "The RPC namespace is deleted.",
}


class PublishRefused(Exception):
    """The engine refused a test message (a bad channel name, say); the message says why."""


class TestPublisher(Protocol):
    """How the console publishes: the server API's executor, given by the composition root
    (the dashboard does not import the API package, which imports the dashboard)."""

    async def publish(self, app: App, channel: str, data: bytes) -> int:
        """Publish JSON `data` to the app's channel; how many subscribers it reached.
        `PublishRefused` when the engine refuses it."""


@dataclass(frozen=True, slots=True)
class Project:
    app: App
    role: Role


def _field_errors(exc: ServiceError, default: str) -> dict[str, str]:
    message = exc.message[:1].upper() + exc.message[1:]
    return {exc.field or default: message + ("" if message.endswith(".") else ".")}


def pusher_options(origin: str) -> dict[str, Any]:
    """pusher-js's host options for this server (its WebSocket `/app/{key}` is on the same
    origin as the dashboard)."""
    parts = urlsplit(origin)
    tls = parts.scheme == "https"
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or (443 if tls else 80),
        "tls": tls,
    }


def _checked(form: dict[str, str], name: str) -> bool:
    return form.get(name) in ("on", "1", "true", "yes")


class ProjectPages:
    def __init__(
        self,
        dashboard: Dashboard,
        service: ApplicationService,
        tokens: TokenService,
        analytics: AnalyticsReader,
        publisher: TestPublisher | None,
        lifecycle: LifecycleSource | None = None,
    ) -> None:
        self.d = dashboard
        self.service = service
        self.tokens = tokens
        self.analytics = analytics
        self.publisher = publisher
        self.lifecycle = lifecycle
        self.d.templates.globals.update(
            roles=[r.value for r in Role],
            bool_options=BOOL_OPTIONS,
            int_options=INT_OPTIONS,
            option_labels=OPTION_LABELS,
            proxy_kinds=PROXY_KINDS,
            quota_labels=QUOTA_LABELS,
            proxy_labels=PROXY_LABELS,
            webhook_events=WEBHOOK_EVENTS,
            periods=list(PERIODS),
            charts=CHARTS,
            chart_w=WIDTH,
            chart_h=HEIGHT,
        )

    def routes(self) -> list[Route]:
        p = "/projects/{app_id}"
        return [
            Route("/projects", self.create, methods=["POST"]),
            Route(p, self.overview, methods=["GET"]),
            Route(p + "/secret", self.reveal_secret, methods=["POST"]),
            Route(p + "/regenerate", self.regenerate, methods=["POST"]),
            Route(p + "/regenerate-client-key", self.regenerate_client_key, methods=["POST"]),
            Route(p + "/regenerate-secret", self.regenerate_secret, methods=["POST"]),
            Route(p + "/analytics.json", self.analytics_json, methods=["GET"]),
            Route(p + "/settings", self.settings, methods=["GET", "POST"]),
            Route(p + "/quotas", self.save_quotas, methods=["POST"]),
            Route(p + "/namespaces", self.save_namespace, methods=["POST"]),
            Route(p + "/namespaces/delete", self.delete_namespace, methods=["POST"]),
            Route(p + "/delete", self.delete, methods=["POST"]),
            Route(p + "/webhooks", self.webhooks, methods=["GET", "POST"]),
            Route(p + "/webhooks/{webhook_id}", self.webhook, methods=["GET", "POST"]),
            Route(p + "/webhooks/{webhook_id}/{action}", self.webhook_action, methods=["POST"]),
            Route(
                p + "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
                self.replay,
                methods=["POST"],
            ),
            Route(p + "/console", self.console, methods=["GET"]),
            Route(p + "/console/token", self.console_token, methods=["POST"]),
            Route(p + "/console/publish", self.console_publish, methods=["POST"]),
            Route(p + "/members", self.members, methods=["GET", "POST"]),
            Route(p + "/members/{member_id}/role", self.member_role, methods=["POST"]),
            Route(p + "/members/{member_id}/remove", self.member_remove, methods=["POST"]),
            *ProxyPages(self).routes(),
            *ConsoleStream(self, self.lifecycle).routes(),
        ]

    # -- who may see what ---------------------------------------------------------------------

    async def _find(self, request: Request, signed: Signed) -> Project | None:
        app_id = request.path_params["app_id"]
        if not APP_ID_PATTERN.match(app_id):
            return None
        app = await self.service.get_application(app_id)
        if app is None:
            return None
        me = signed[1]
        role = await self.service.role_of(app, me.account_id, operator=me.operator)
        return Project(app, role) if role is not None else None

    def _not_found(self, signed: Signed) -> Response:
        return self.d.refuse(404, "Page not found", "There is no page at this address.", signed)

    def _forbidden(self, signed: Signed, what: str) -> Response:
        return self.d.refuse(
            403, "Not allowed", f"Your role on this project does not allow {what}.", signed
        )

    async def _open(self, request: Request) -> tuple[Signed, Project] | Response:
        """A GET: the session and the project, or the response (sign in, 404)."""
        signed = await self.d._require(request)
        if isinstance(signed, Response):
            return signed
        project = await self._find(request, signed)
        if project is None:
            return self._not_found(signed)
        return signed, project

    async def _change(
        self, request: Request, allowed: str = "change"
    ) -> tuple[Signed, Project, dict[str, str]] | Response:
        """A POST: CSRF checked, the project found, the role allowing `allowed` ("view",
        "change" or "manage")."""
        checked = await self.d._signed_form(request)
        if isinstance(checked, Response):
            return checked
        signed, form = checked
        project = await self._find(request, signed)
        if project is None:
            return self._not_found(signed)
        role = project.role
        if allowed == "change" and not role.can_change:
            return self._forbidden(signed, "changes; ask an owner for the developer role")
        if allowed == "manage" and not role.manages:
            return self._forbidden(signed, "this; only owners manage members and deletion")
        return signed, project, form

    def _render(
        self, template: str, signed: Signed, project: Project, *, status: int = 200, **ctx: Any
    ) -> Response:
        return self.d.page(
            template,
            status=status,
            signed=signed,
            project=project.app,
            role=project.role,
            active="projects",
            **ctx,
        )

    def _back(self, project: Project, tab: str, done: str) -> Response:
        suffix = f"/{tab}" if tab else ""
        return self.d.redirect(f"/projects/{project.app.app_id}{suffix}?done={done}")

    @staticmethod
    def _done(request: Request) -> str | None:
        return DONE.get(request.query_params.get("done", ""))

    # -- create -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        checked = await self.d._signed_form(request)
        if isinstance(checked, Response):
            return checked
        signed, form = checked
        name = form.get("name", "")
        try:
            app, keys = await self.service.create_application(
                name=name, owner_id=signed[1].account_id
            )
        except ServiceError as exc:
            return await self.d.projects_page(
                request, signed, status=400, errors=_field_errors(exc, "name"), values=form
            )
        return self._flash_key(request, app, keys, "created")

    # -- overview: keys, analytics, connecting --------------------------------------------------

    def _flash_key(self, request: Request, app: App, keys: NewAppKeys, done: str) -> Response:
        """Redirect to the overview, handing it the new key in a cookie it reads once (see
        `flash`): a reload then repeats nothing and shows the key no more."""
        response = self.d.redirect(f"/projects/{app.app_id}?done={done}")
        set_flash(response, request, f"{BASE}/projects/{app.app_id}", keys.api_key)
        return response

    async def overview(self, request: Request) -> Response:
        opened = await self._open(request)
        if isinstance(opened, Response):
            return opened
        signed, project = opened
        path = f"{BASE}/projects/{project.app.app_id}"
        flashed = read_flash(request)
        # Shown only if it is this app's current key (a stale or forged cookie shows nothing),
        # and only to a member who may see secrets.
        new_key = (
            NewAppKeys(flashed)
            if flashed
            and project.role.sees_secrets
            and hmac.compare_digest(hash_key(flashed), project.app.api_key_hash)
            else None
        )
        response = await self._overview(
            request,
            signed,
            project,
            new_key=new_key,
            created=request.query_params.get("done") == "created",
            done=None if new_key else self._done(request),
        )
        if flashed is not None:
            clear_flash(response, request, path)
        return response

    async def _overview(
        self,
        request: Request,
        signed: Signed,
        project: Project,
        *,
        status: int = 200,
        new_key: NewAppKeys | None = None,
        secret: str | None = None,
        **ctx: Any,
    ) -> Response:
        period = request.query_params.get("period", "1h")
        if period not in PERIODS:
            period = "1h"
        snap = await self.analytics.snapshot(project.app.app_id, PERIODS[period])
        return self._render(
            "project.html",
            signed,
            project,
            status=status,
            tab="overview",
            new_key=new_key.api_key if new_key else None,
            secret=secret,
            period=period,
            stats=chart_data(period, snap),
            origin=self.d.origin(request),
            pusher=pusher_options(self.d.origin(request)),
            secret_grace=list(SECRET_GRACE.items()),
            previous_secret_until=(
                datetime.fromtimestamp(project.app.previous_secret_until, UTC)
                if project.app.previous_secret_until > time.time()
                else None
            ),
            **ctx,
        )

    async def reveal_secret(self, request: Request) -> Response:
        changed = await self._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, _ = changed
        return await self._overview(request, signed, project, secret=project.app.app_secret)

    async def regenerate(self, request: Request) -> Response:
        changed = await self._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        if not _checked(form, "confirm"):
            return await self._overview(
                request,
                signed,
                project,
                status=400,
                errors={
                    "confirm": "Tick the box to confirm: the current server key stops working "
                    "at once."
                },
            )
        try:
            app, keys = await self.service.regenerate_api_key(project.app, as_admin=True)
        except ServiceError as exc:
            return await self._overview(request, signed, project, status=400, alert=exc.message)
        return self._flash_key(request, app, keys, "regenerated")

    async def _confirmed_owner(
        self, request: Request, field: str, why: str
    ) -> tuple[Signed, Project, dict[str, str]] | Response:
        """An owner's POST whose confirmation box `field` is ticked; the overview with the
        error beside the box otherwise."""
        changed = await self._change(request, "manage")
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        if not _checked(form, field):
            return await self._overview(
                request, signed, project, status=400, errors={field: why}, opened=field
            )
        return signed, project, form

    async def regenerate_client_key(self, request: Request) -> Response:
        """Owners only: the client key is public, but replacing it cuts every client off."""
        checked = await self._confirmed_owner(
            request,
            "confirm_client_key",
            "Tick the box to confirm: clients using the current client key can no longer connect.",
        )
        if isinstance(checked, Response):
            return checked
        signed, project, _ = checked
        try:
            await self.service.regenerate_client_key(project.app, as_admin=True)
        except ServiceError as exc:
            return await self._overview(request, signed, project, status=400, alert=exc.message)
        return self._back(project, "", "client_key_regenerated")

    async def regenerate_secret(self, request: Request) -> Response:
        """Owners only, through the service method of `POST .../regenerate-secret` (its grace
        period too). The new secret is not shown here: Reveal app secret shows it, so a reload
        of the page after the redirect repeats nothing."""
        checked = await self._confirmed_owner(
            request,
            "confirm_secret",
            "Tick the box to confirm: tokens signed with the current secret stop verifying "
            "when the grace period ends.",
        )
        if isinstance(checked, Response):
            return checked
        signed, project, form = checked
        grace = form.get("grace_seconds", "0")
        if grace not in SECRET_GRACE:
            return await self._overview(
                request,
                signed,
                project,
                status=400,
                errors={"grace_seconds": "Choose one of the grace periods listed."},
                opened="confirm_secret",
            )
        try:
            await self.service.regenerate_app_secret(
                project.app, grace_seconds=int(grace), as_admin=True
            )
        except ServiceError as exc:
            return await self._overview(request, signed, project, status=400, alert=exc.message)
        return self._back(
            project, "", "secret_regenerated_grace" if grace != "0" else "secret_regenerated"
        )

    async def analytics_json(self, request: Request) -> Response:
        opened = await self._open(request)
        if isinstance(opened, Response):
            return opened
        _, project = opened
        period = request.query_params.get("period", "1h")
        if period not in PERIODS:
            return JSONResponse(
                {"error": "period must be one of 1h, 24h, 7d, 30d"}, status_code=400
            )
        snap = await self.analytics.snapshot(project.app.app_id, PERIODS[period])
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        return JSONResponse(chart_data(period, snap), headers=headers)

    # -- settings, namespaces, rename, delete ---------------------------------------------------

    def _settings_page(
        self, signed: Signed, project: Project, *, status: int = 200, **ctx: Any
    ) -> Response:
        app = project.app
        ctx.setdefault(
            "values",
            {
                "name": app.name,
                "allowed_domain": app.allowed_domain or "",
                "rate_limit": str(app.rate_limit),
                "enabled": app.status,
                "pusher_client_events": app.pusher_client_events,
                "pusher_subscription_count": app.pusher_subscription_count,
                "pusher_user_authentication": app.pusher_user_authentication,
            },
        )
        ctx.setdefault("errors", {})
        ctx.setdefault(
            "quota_values",
            {
                q: "" if getattr(app.quotas, q) is None else str(getattr(app.quotas, q))
                for q in QUOTA_LABELS
            },
        )
        ctx.setdefault("quota_errors", {})
        ctx.setdefault("ns_values", {})
        ctx.setdefault("ns_errors", {})
        ctx.setdefault("delete_errors", {})
        return self._render(
            "project_settings.html",
            signed,
            project,
            status=status,
            tab="settings",
            proxy_names=[p.name for p in app.proxies.proxies],
            ceiling=None if signed[1].operator else self.service.key_rate_limit_ceiling,
            **ctx,
        )

    async def settings(self, request: Request) -> Response:
        if request.method == "GET":
            opened = await self._open(request)
            if isinstance(opened, Response):
                return opened
            return self._settings_page(*opened, done=self._done(request))
        changed = await self._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        values: dict[str, Any] = {
            "name": form.get("name", ""),
            "allowed_domain": form.get("allowed_domain", ""),
            "rate_limit": form.get("rate_limit", ""),
            "enabled": _checked(form, "enabled"),
            "pusher_client_events": _checked(form, "pusher_client_events"),
            "pusher_subscription_count": _checked(form, "pusher_subscription_count"),
            "pusher_user_authentication": _checked(form, "pusher_user_authentication"),
        }
        try:
            rate = int(values["rate_limit"].strip())
        except ValueError:
            errors = {"rate_limit": "Enter a whole number of messages per minute, like 1000."}
            return self._settings_page(signed, project, status=400, values=values, errors=errors)
        update: AppUpdate = {
            "name": values["name"],
            "allowed_domain": values["allowed_domain"],
            "rate_limit": rate,
            "status": values["enabled"],
            "pusher_client_events": values["pusher_client_events"],
            "pusher_subscription_count": values["pusher_subscription_count"],
            "pusher_user_authentication": values["pusher_user_authentication"],
        }
        try:
            await self.service.update_project(project.app, update, operator=signed[1].operator)
        except ServiceError as exc:
            return self._settings_page(
                signed, project, status=400, values=values, errors=_field_errors(exc, "name")
            )
        return self._back(project, "settings", "settings")

    async def save_quotas(self, request: Request) -> Response:
        """The operator's quotas for the project, through the service's update (its checks,
        the admin API's): an owner sees them, only the operator changes them."""
        changed = await self._change(request, "manage")
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        if not signed[1].operator:
            return self._forbidden(signed, "this; only the server's operator sets quotas")
        values = {q: form.get(q, "").strip() for q in QUOTA_LABELS}
        quotas: dict[str, int | None] = {}
        errors: dict[str, str] = {}
        for name, raw in values.items():
            if not raw:
                quotas[name] = None  # the server's own limit
                continue
            try:
                quotas[name] = int(raw.replace(",", "").replace("_", ""))
            except ValueError:
                errors[name] = "Enter a whole number, like 1000, or leave it empty."
        if not errors:
            try:
                await self.service.update_project(project.app, {"quotas": quotas}, operator=True)
            except ServiceError as exc:
                # The service's check (the admin API's) names the quota; the form has a label.
                if exc.field in QUOTA_LABELS:
                    errors = {
                        exc.field: f"Enter a number from 1 to {MAX_QUOTA:,}, or leave "
                        "it empty for the server's limit."
                    }
                else:
                    errors = _field_errors(exc, "max_connections")
            else:
                return self._back(project, "settings", "quotas")
        return self._settings_page(
            signed, project, status=400, quota_values=values, quota_errors=errors
        )

    async def save_namespace(self, request: Request) -> Response:
        changed = await self._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        name = form.get("namespace", "").strip()
        options: dict[str, Any] = {n: _checked(form, n) for n in BOOL_OPTIONS}
        errors: dict[str, str] = {}
        for option in INT_OPTIONS:
            raw = form.get(option, "0").strip() or "0"
            try:
                options[option] = int(raw)
            except ValueError:
                errors[option] = "Enter a whole number, like 0 or 100."
        if not name:
            errors["namespace"] = (
                "Enter the namespace's name: the part of a channel name before the colon, "
                "like chat in chat:room1."
            )
        for kind in PROXY_KINDS:
            chosen = form.get(f"{kind}_proxy", "").strip()
            options[f"{kind}_proxy_enabled"] = bool(chosen)
            options[f"{kind}_proxy_name"] = chosen or "default"
        values = {"namespace": name, **{k: form.get(k, "") for k in INT_OPTIONS}}
        values.update({k: options[k] for k in BOOL_OPTIONS})
        values.update({f"{k}_proxy": form.get(f"{k}_proxy", "") for k in PROXY_KINDS})
        if not errors:
            namespaces = {
                k: {f: getattr(v, f) for f in NamespaceOptions.__struct_fields__}
                for k, v in project.app.namespaces.items()
            }
            kept = project.app.namespaces.get(name, NamespaceOptions())
            namespaces[name] = {**{k: getattr(kept, k) for k in OTHER_OPTIONS}, **options}
            try:
                await self.service.update_project(
                    project.app, {"namespaces": namespaces}, operator=signed[1].operator
                )
            except ServiceError as exc:
                # A proxy name the app lacks is shown beside the select that chose it.
                errors = {
                    k.removesuffix("_name") if k.endswith("_proxy_name") else k: v
                    for k, v in _field_errors(exc, "namespace").items()
                }
        if errors:
            return self._settings_page(
                signed, project, status=400, ns_values=values, ns_errors=errors
            )
        return self._back(project, "settings", "namespace")

    async def delete_namespace(self, request: Request) -> Response:
        changed = await self._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        namespaces = {
            k: {f: getattr(v, f) for f in NamespaceOptions.__struct_fields__}
            for k, v in project.app.namespaces.items()
            if k != form.get("namespace")
        }
        await self.service.update_project(
            project.app, {"namespaces": namespaces}, operator=signed[1].operator
        )
        return self._back(project, "settings", "namespace_deleted")

    async def delete(self, request: Request) -> Response:
        changed = await self._change(request, "manage")
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        if form.get("confirm_name", "").strip() != project.app.name:
            errors = {
                "confirm_name": f"Type the project's name, {project.app.name}, exactly to "
                "delete it."
            }
            return self._settings_page(signed, project, status=400, delete_errors=errors)
        # Deleted meanwhile (NotFound) is the outcome the person asked for.
        with contextlib.suppress(ServiceError):
            await self.service.delete_application(project.app.app_id)
        return self.d.redirect("/projects?done=deleted")

    # -- webhooks -----------------------------------------------------------------------------

    async def _webhooks_page(
        self, signed: Signed, project: Project, *, status: int = 200, **ctx: Any
    ) -> Response:
        ctx.setdefault("values", {})
        ctx.setdefault("errors", {})
        hooks = await self.service.list_webhooks(project.app.app_id)
        return self._render(
            "project_webhooks.html",
            signed,
            project,
            status=status,
            tab="webhooks",
            webhooks=hooks,
            **ctx,
        )

    @staticmethod
    def _webhook_form(form: dict[str, str]) -> tuple[str, list[str], dict[str, Any]]:
        chosen = ["*"] if _checked(form, "event_all") else []
        chosen += [e for e in WEBHOOK_EVENTS if _checked(form, "event_" + e)]
        chosen += [e.strip() for e in form.get("custom_events", "").split(",") if e.strip()]
        values: dict[str, Any] = dict(form)
        values["events"] = chosen
        return form.get("url", "").strip(), chosen, values

    async def webhooks(self, request: Request) -> Response:
        if request.method == "GET":
            opened = await self._open(request)
            if isinstance(opened, Response):
                return opened
            signed, project = opened
            flashed = read_flash(request)
            shown: dict[str, Any] = {}
            if flashed and project.role.sees_secrets:
                webhook_id, _, secret = flashed.partition(" ")
                hooks = {h.id: h for h in await self.service.list_webhooks(project.app.app_id)}
                hook = hooks.get(webhook_id)
                if hook is not None and hmac.compare_digest(hook.secret, secret):
                    shown = {"new_webhook": hook, "new_secret": secret}
            response = await self._webhooks_page(signed, project, done=self._done(request), **shown)
            if flashed is not None:
                clear_flash(response, request, f"{BASE}/projects/{project.app.app_id}/webhooks")
            return response
        changed = await self._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        url, events, values = self._webhook_form(form)
        errors: dict[str, str] = {}
        if not url:
            errors["url"] = (
                "Enter the address that receives the events, like https://example.com/hooks."
            )
        if not events:
            errors["events"] = "Choose at least one event, or All events."
        if not errors:
            try:
                webhook, shown_once = await self.service.create_webhook(
                    project.app.app_id, url=url, events=events
                )
            except ServiceError as exc:
                errors = _field_errors(exc, "url")
            else:
                response = self._back(project, "webhooks", "webhook_added")
                if shown_once:
                    path = f"{BASE}/projects/{project.app.app_id}/webhooks"
                    set_flash(response, request, path, f"{webhook.id} {shown_once}")
                return response
        return await self._webhooks_page(signed, project, status=400, values=values, errors=errors)

    async def _webhook_page(
        self, signed: Signed, project: Project, webhook_id: str, *, status: int = 200, **ctx: Any
    ) -> Response:
        hooks = {h.id: h for h in await self.service.list_webhooks(project.app.app_id)}
        webhook = hooks.get(webhook_id)
        if webhook is None:
            return self._not_found(signed)
        deliveries = await self.service.list_deliveries(project.app.app_id, webhook_id)
        values: dict[str, Any] = {"url": webhook.url, "events": list(webhook.events)}
        values["custom_events"] = ", ".join(
            e for e in webhook.events if e != "*" and e not in WEBHOOK_EVENTS
        )
        ctx.setdefault("values", values)
        ctx.setdefault("errors", {})
        return self._render(
            "project_webhook.html",
            signed,
            project,
            status=status,
            tab="webhooks",
            webhook=webhook,
            deliveries=deliveries[:50],
            **ctx,
        )

    async def webhook(self, request: Request) -> Response:
        webhook_id = request.path_params["webhook_id"]
        if request.method == "GET":
            opened = await self._open(request)
            if isinstance(opened, Response):
                return opened
            done = self._done(request)
            if request.query_params.get("done") == "test_failed":  # shown as what to fix
                return await self._webhook_page(*opened, webhook_id, alert=done)
            return await self._webhook_page(*opened, webhook_id, done=done)
        changed = await self._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        url, events, values = self._webhook_form(form)
        errors: dict[str, str] = {}
        if not events:
            errors["events"] = "Choose at least one event, or All events."
        if not errors:
            try:
                await self.service.update_webhook(
                    project.app.app_id, webhook_id, url=url, events=events
                )
            except ServiceError as exc:
                if exc.field is None and exc.message == "webhook not found":
                    return self._not_found(signed)
                errors = _field_errors(exc, "url")
            else:
                return self._back(project, f"webhooks/{webhook_id}", "webhook")
        return await self._webhook_page(
            signed, project, webhook_id, status=400, values=values, errors=errors
        )

    async def webhook_action(self, request: Request) -> Response:
        changed = await self._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, _ = changed
        webhook_id, action = request.path_params["webhook_id"], request.path_params["action"]
        app_id = project.app.app_id
        try:
            if action == "enable" or action == "disable":
                await self.service.set_webhook_enabled(app_id, webhook_id, action == "enable")
                return self._back(project, f"webhooks/{webhook_id}", f"webhook_{action}d")
            if action == "delete":
                await self.service.delete_webhook(app_id, webhook_id)
                return self._back(project, "webhooks", "webhook_deleted")
            if action == "test":
                sent = await self.service.send_test_event(app_id, webhook_id)
                done = "test_delivered" if sent.delivered else "test_failed"
                return self._back(project, f"webhooks/{webhook_id}", done)
        except ServiceError:
            pass
        return self._not_found(signed)

    async def replay(self, request: Request) -> Response:
        changed = await self._change(request)
        if isinstance(changed, Response):
            return changed
        signed, project, _ = changed
        webhook_id = request.path_params["webhook_id"]
        try:
            await self.service.replay_delivery(
                project.app.app_id, webhook_id, request.path_params["delivery_id"]
            )
        except ServiceError:
            return self._not_found(signed)
        return self._back(project, f"webhooks/{webhook_id}", "replayed")

    # -- live console -------------------------------------------------------------------------

    async def console(self, request: Request) -> Response:
        opened = await self._open(request)
        if isinstance(opened, Response):
            return opened
        return self._render(
            "project_console.html",
            *opened,
            tab="console",
            channel=request.query_params.get("channel", "public:lobby")[:255],
            done=self._done(request),
            errors={},
        )

    async def console_token(self, request: Request) -> Response:
        """A short-lived connection token for this member, subscribed server-side to the
        channel to watch (its `channels` claim), so any channel of the app can be watched
        whatever its namespace lets clients do. Viewers may watch: publications are not
        secrets of the project."""
        changed = await self._change(request, "view")
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        channel = form.get("channel", "").strip()
        if not channel or len(channel) > 255:
            return JSONResponse(
                {"error": "Enter the channel to watch, like public:lobby."}, status_code=400
            )
        minted = self.tokens.mint_connection_token(
            project.app.app_id,
            f"dashboard:{signed[1].account_id}",
            CONSOLE_TOKEN_TTL,
            channels=[channel],
            # No `info`: the app's own clients see who joins a public channel, and a member's
            # email is not theirs to see.
        )
        return JSONResponse(
            {"token": minted.token, "expires_in": CONSOLE_TOKEN_TTL, "channel": channel},
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
        )

    async def console_publish(self, request: Request) -> Response:
        """Publish a test message. From the page's script (Accept: application/json) the
        answer is JSON; from a plain form, the console page again."""
        changed = await self._change(request)
        wants_json = "application/json" in request.headers.get("accept", "")
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        channel = form.get("channel", "").strip()
        text = form.get("message", "")
        error = None
        if not channel:
            error = ("channel", "Enter the channel to publish to, like public:lobby.")
        elif not text.strip() or len(text) > MAX_TEST_MESSAGE:
            error = ("message", f"Enter a message of 1 to {MAX_TEST_MESSAGE} characters.")
        elif not project.app.status:
            error = ("channel", "The project is disabled: enable it in Settings to publish.")
        elif self.publisher is None:
            error = ("message", "Publishing is not available on this node.")
        else:
            # Valid JSON is sent as is; any other text as {"text": ...}.
            try:
                data = json.dumps(json.loads(text)).encode()
            except ValueError:
                data = json.dumps({"text": text}).encode()
            try:
                reached = await self.publisher.publish(project.app, channel, data)
            except PublishRefused as exc:
                error = ("channel", str(exc))
        if error is not None:
            if wants_json:
                return JSONResponse({"error": error[1], "field": error[0]}, status_code=400)
            return self._render(
                "project_console.html",
                signed,
                project,
                status=400,
                tab="console",
                channel=channel,
                message=text,
                errors={error[0]: error[1]},
            )
        if wants_json:
            return JSONResponse({"published": True, "subscribers": reached})
        return self.d.redirect(f"/projects/{project.app.app_id}/console?done=published")

    # -- members ------------------------------------------------------------------------------

    async def _members_page(
        self, signed: Signed, project: Project, *, status: int = 200, **ctx: Any
    ) -> Response:
        ctx.setdefault("values", {"role": "developer"})
        ctx.setdefault("errors", {})
        owner_id = project.app.owner_id
        owner = await self.d.accounts.get_account(owner_id) if owner_id else None
        return self._render(
            "project_members.html",
            signed,
            project,
            status=status,
            tab="members",
            members=await self.service.list_members(project.app.app_id),
            owner=owner,
            **ctx,
        )

    async def members(self, request: Request) -> Response:
        if request.method == "GET":
            opened = await self._open(request)
            if isinstance(opened, Response):
                return opened
            signed, project = opened
            shown = await self._invited(request, project)
            response = await self._members_page(
                signed, project, done=None if shown else self._done(request), **shown
            )
            if read_flash(request) is not None:
                path = f"{BASE}/projects/{project.app.app_id}/members"
                clear_flash(response, request, path)
            return response
        changed = await self._change(request, "manage")
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        email = form.get("email", "").strip().lower()
        role = form.get("role", "")
        values = {"email": email, "role": role}
        if "@" not in email or len(email) > 254:
            errors = {"email": "Enter the person's email address, like name@example.com."}
            return await self._members_page(
                signed, project, status=400, values=values, errors=errors
            )
        account = await self.d.accounts.find_account(email)
        token: str | None = None
        try:
            if account is not None:
                if account.account_id == project.app.owner_id:
                    raise ServiceError(f"{email} owns this project already", "email")
                await self.service.add_member(
                    project.app.app_id, email=email, role=role, account_id=account.account_id
                )
            else:
                try:
                    _, token = await self.d.accounts.create_invitation(signed[1], for_project=True)
                except NotAllowedError as exc:  # pragma: no cover - owners may invite
                    raise ServiceError(str(exc), "email") from None
                await self.service.add_member(
                    project.app.app_id,
                    email=email,
                    role=role,
                    account_id=None,
                    invitation_hash=hash_token(token),
                )
        except ServiceError as exc:
            return await self._members_page(
                signed, project, status=400, values=values, errors=_field_errors(exc, "email")
            )
        if token is None:
            return self._back(project, "members", "member_added")
        # POST/redirect/GET: the token (stored hashed: this is the one time it can be shown)
        # reaches the Members page in a read-once cookie, so a reload invites nobody again.
        response = self._back(project, "members", "member_invited")
        path = f"{BASE}/projects/{project.app.app_id}/members"
        set_flash(response, request, path, f"{token} {email}")
        return response

    async def _invited(self, request: Request, project: Project) -> dict[str, Any]:
        """The invitation link a POST just made, from its read-once cookie: shown to an owner
        only, and only while the invitation is unused and its person a pending member here."""
        token, _, email = (read_flash(request) or "").partition(" ")
        if not token or not email or not project.role.manages:
            return {}
        pending = {
            m.email for m in await self.service.list_members(project.app.app_id) if not m.account_id
        }
        wanted = hash_token(token)
        live = any(
            i.token_hash == wanted and i.used_at is None
            for i in await self.d.accounts.list_invitations()
        )
        if email not in pending or not live:
            return {}
        link = f"{self.d.origin(request)}{BASE}/signup?invitation={token}"
        return {"new_link": link, "new_email": email}

    async def member_role(self, request: Request) -> Response:
        changed = await self._change(request, "manage")
        if isinstance(changed, Response):
            return changed
        signed, project, form = changed
        try:
            await self.service.set_member_role(
                project.app.app_id, request.path_params["member_id"], form.get("role", "")
            )
        except ServiceError as exc:
            if exc.field is None:
                return self._not_found(signed)
            return await self._members_page(signed, project, status=400, alert=exc.message)
        return self._back(project, "members", "role")

    async def member_remove(self, request: Request) -> Response:
        changed = await self._change(request, "manage")
        if isinstance(changed, Response):
            return changed
        signed, project, _ = changed
        try:
            await self.service.remove_member(project.app.app_id, request.path_params["member_id"])
        except ServiceError:
            return self._not_found(signed)
        return self._back(project, "members", "removed")
