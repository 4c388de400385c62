"""The application service: every change to applications and their webhooks, with its checks,
written once. The HTTP routes, the CLI and the dashboard all call it.

It works on stores and a change notifier given to it (Protocols), and raises its own typed
errors (`ServiceError` and the store's `AppExistsError`/`AppIdRetiredError`); it knows nothing
of HTTP, of a terminal, or of the engine. Who may call what (admin or app key, rate limits) is
the caller's business; what a caller's key may still do once a change races it is the
service's (see `update_application`).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypedDict

import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from xshathra.model import AppId
from xshathra.outbound.netguard import UnsafeURLError, check_webhook_url
from xshathra.tenancy.apps import (
    APP_ID_PATTERN,
    DEFAULT_RATE_LIMIT,
    AppChanges,
    Application,
    AppStore,
    AppSummary,
    NamespaceOptions,
    NewAppKeys,
    Quotas,
    SecretRotation,
    generate_app,
    new_api_key,
    new_secret,
    utcnow,
)
from xshathra.tenancy.members import Member, MemberExistsError, MemberStore, Role
from xshathra.tenancy.proxies import ProxyConfig, ProxyConfigError, parse_proxy_config
from xshathra.webhooks.events import make_test_delivery
from xshathra.webhooks.models import (
    Delivery,
    NewDelivery,
    Webhook,
    WebhookChanges,
    WebhookLimitError,
    new_webhook_id,
)
from xshathra.webhooks.store import WebhookStore

MAX_SECRET_GRACE = 30 * 86400  # seconds an old app_secret may stay valid
ADMIN_RATE_LIMIT_CEILING = 1_000_000  # per minute: the most the admin may set
MAX_NAME = 200
MAX_WEBHOOK_ROOMS = 100
MAX_WEBHOOK_HEADERS = 20
MAX_HEADER_VALUE = 1000
# Headers a delivery sets itself (or HTTP does): an app's own header never replaces them.
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "user-agent", "transfer-encoding", "connection"}
)
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}\Z")
_ROOM_GLOB_RE = re.compile(r"^[A-Za-z0-9_\-.:@=,;/!~*+#|$%&^()\[\]{}?]{1,255}\Z")
MAX_WEBHOOK_EVENTS = 100
MAX_EVENT_NAME = 200
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(:\d{1,5})?$"
)
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_-]{0,64}$")


# --- errors ------------------------------------------------------------------------------------


class ServiceError(Exception):
    """A refusal, with a message meant for the person who asked (no secret, no internals).
    `field` names the input it is about, when one is (a form shows the message beside it)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    """A value the service does not accept (a name too long, a bad domain, a namespace...)."""


class NotFound(ServiceError):
    """No such application, webhook or delivery (for this application)."""


class KeyReplaced(ServiceError):
    """The API key the caller acted with was regenerated meanwhile: its change is refused."""


class OperatorOnly(ServiceError):
    """A change only the operator (admin key, operator's dashboard) may make: quotas."""


class AppDisabled(ServiceError):
    """The application is disabled: a change made with its own key is refused."""


# --- what it works on --------------------------------------------------------------------------


class ChangeNotifier(Protocol):
    """The one way the service tells the running nodes that something they cache changed."""

    async def app_changed(self, app_id: str) -> None:
        """The app was updated, re-keyed or deleted: every node (this one before the call
        returns) drops what it caches of it and refreshes or closes its connections."""

    async def webhooks_changed(self, app_id: str) -> None:
        """The app's webhooks changed: every node drops its cached list of them."""


class NoNotifier:
    """For a process with no node to tell (the CLI, which writes the database directly)."""

    async def app_changed(self, app_id: str) -> None:
        return None

    async def webhooks_changed(self, app_id: str) -> None:
        return None


class DeliveryLog(Protocol):
    """The part of the delivery store the service uses: a webhook's recent deliveries."""

    async def list_for_webhook(self, webhook_id: str, limit: int = 100) -> list[Delivery]: ...

    async def replay(self, webhook_id: str, delivery_id: str) -> bool:
        """Queue the delivery again; False if the webhook has no such delivery."""

    async def record_attempt(
        self, item: NewDelivery, status_code: int | None, error: str | None
    ) -> None:
        """Store a delivery attempted once already (a test event), never retried."""


class AppUpdate(TypedDict, total=False):
    """The fields an update sets, as the caller gave them (checked by the service). A field
    that is absent is left as stored; `allowed_domain` None (or "") clears it; `namespaces`
    replaces all of the app's namespaces: name -> options by their Centrifugo names."""

    name: str
    allowed_domain: str | None
    rate_limit: int
    status: bool
    namespaces: Mapping[str, Mapping[str, Any]]
    # Quotas (operator only): a name given sets it, null clears it (the deployment's limit).
    quotas: Mapping[str, int | None]
    # The app's own token keys and claims; None or "" clears one.
    token_rsa_public_key: str | None
    token_ecdsa_public_key: str | None
    token_jwks_url: str | None
    token_audience: str | None
    token_issuer: str | None
    proxies: Mapping[str, Any] | None  # SPEC §9; None (or {}) removes every proxy
    pusher_client_events: bool
    pusher_subscription_count: bool
    pusher_user_authentication: bool


# --- checks ------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """An application name, trimmed; 1 to 200 characters."""
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name must be 1 to {MAX_NAME} characters", "name")
    return name


def check_app_id(app_id: str | None) -> str | None:
    if app_id is not None and not APP_ID_PATTERN.match(app_id):
        raise InvalidInput("app_id must match [A-Za-z0-9_-]{1,64}")
    return app_id


def check_domain(domain: str | None) -> str | None:
    """A host name lower-cased, or None (given as None or "") to clear it."""
    if domain is None:
        return None
    domain = domain.strip().lower()
    if domain == "":
        return None
    if not _DOMAIN_RE.match(domain):
        raise InvalidInput(
            "allowed_domain must be a domain name such as example.com", "allowed_domain"
        )
    return domain


def check_rate_limit(rate: int | None, ceiling: int = ADMIN_RATE_LIMIT_CEILING) -> int | None:
    """A per-minute limit from 1 to `ceiling`: 1,000,000 for the admin, the operator's
    XSHATHRA_APP_RATE_LIMIT_CEILING for an app's own key (a leaked key must not lift it)."""
    if rate is not None and not 1 <= rate <= ceiling:
        raise InvalidInput(f"rate_limit must be an integer from 1 to {ceiling}", "rate_limit")
    return rate


def check_namespaces(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, NamespaceOptions]:
    """Namespace options as the engine's records. `NamespaceOptions` is the one schema: its
    fields and the bounds it enforces itself; only the names are checked here."""
    result: dict[str, NamespaceOptions] = {}
    for name, options in raw.items():
        if not _NAMESPACE_RE.match(name):
            raise InvalidInput(
                f"namespace name '{name[:64]}' must match [A-Za-z0-9_-]{{0,64}}", "namespace"
            )
        try:
            result[name] = NamespaceOptions(**options)
        except ValueError as exc:  # the bounds NamespaceOptions itself enforces
            # Its messages start with the option's name: that is the field to fix.
            option = str(exc).split(" ", 1)[0]
            field = option if option in NamespaceOptions.__struct_fields__ else None
            raise InvalidInput(f"namespace '{name}': {exc}", field) from None
        except TypeError:  # an option it does not have
            raise InvalidInput(f"namespace '{name}': unknown option") from None
    return result


def check_quotas(current: Quotas, given: Mapping[str, int | None]) -> Quotas:
    """`current` with the quotas in `given` set (an int) or cleared (None)."""
    merged: dict[str, Any] = msgspec.structs.asdict(current)
    for name, value in given.items():
        if name not in merged:
            raise InvalidInput(f"{name[:64]} is not a quota")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InvalidInput(f"{name} must be an integer or null", name)
        merged[name] = value
    try:
        return Quotas(**merged)
    except ValueError as exc:
        # Quotas names the offending quota first ("max_connections must be from ...").
        name = str(exc).split(" ", 1)[0]
        raise InvalidInput(str(exc), name if name in merged else None) from None


MAX_PUBLIC_KEY = 16_384  # characters of PEM: an RSA key of 8192 bits fits easily
MAX_CLAIM = 255


def check_public_key(pem: str | None, kind: str) -> str | None:
    """A PEM public key of `kind` ("RSA" or "ECDSA", P-256 for ES256), or None to clear."""
    if pem is None or not pem.strip():
        return None
    field = f"token_{kind.lower()}_public_key"
    if len(pem) > MAX_PUBLIC_KEY:
        raise InvalidInput(f"{field} is too long")
    try:
        key = serialization.load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput(f"{field} must be a PEM public key") from None
    if kind == "RSA" and not isinstance(key, rsa.RSAPublicKey):
        raise InvalidInput(f"{field} must be an RSA public key")
    if kind == "ECDSA" and not (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        raise InvalidInput(f"{field} must be an ECDSA P-256 public key (ES256)")
    return pem.strip() + "\n"


def check_claim(value: str | None, name: str) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_CLAIM or not value.isprintable():
        raise InvalidInput(f"{name} must be 1 to {MAX_CLAIM} printable characters")
    return value


def check_proxies(
    raw: Mapping[str, Any] | None, namespaces: Mapping[str, NamespaceOptions]
) -> ProxyConfig:
    """The `proxies` section, checked on its own and against the namespaces that name its
    proxies (`subscribe_proxy_name`...)."""
    try:
        config = parse_proxy_config(dict(raw or {}))
        check_namespace_proxies(config, namespaces)
    except ProxyConfigError as exc:
        raise proxy_error(exc) from None
    return config


def proxy_error(exc: ProxyConfigError) -> InvalidInput:
    """The refusal with its `field`: the path its message starts with
    (`proxies.proxies[0].endpoint`), or a namespace's option (`subscribe_proxy_name`)."""
    message = str(exc)
    head = message.split(": ", 1)
    if message.startswith("namespace '") and len(head) == 2:
        return InvalidInput(message, head[1].split(" ", 1)[0])
    return InvalidInput(message, message.split(" ", 1)[0].rstrip(":"))


def check_namespace_proxies(
    config: ProxyConfig, namespaces: Mapping[str, NamespaceOptions]
) -> None:
    for name, options in namespaces.items():
        for kind in ("subscribe", "publish", "sub_refresh"):
            if getattr(options, f"{kind}_proxy_enabled"):
                config.check_name(
                    getattr(options, f"{kind}_proxy_name"),
                    f"namespace '{name}': {kind}_proxy_name",
                )


def check_events(events: list[str]) -> tuple[str, ...]:
    """Webhook event names, trimmed and without repeats: 1 to 100 of 1 to 200 characters."""
    trimmed = [e.strip() for e in events]
    if (
        not trimmed
        or any(not e or len(e) > MAX_EVENT_NAME for e in trimmed)
        or len(trimmed) > MAX_WEBHOOK_EVENTS
    ):
        raise InvalidInput("events must be a non-empty array of event names", "events")
    return tuple(dict.fromkeys(trimmed))


def check_rooms(rooms: list[str]) -> tuple[str, ...]:
    """Room globs (`*` for any run of characters): up to 100 channel-name patterns."""
    if len(rooms) > MAX_WEBHOOK_ROOMS:
        raise InvalidInput(f"rooms: at most {MAX_WEBHOOK_ROOMS} patterns")
    for room in rooms:
        if not isinstance(room, str) or not _ROOM_GLOB_RE.match(room):
            raise InvalidInput(f"rooms: '{str(room)[:64]}' is not a channel name or * pattern")
    return tuple(dict.fromkeys(rooms))


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Custom delivery headers: up to 20, HTTP token names, single-line values; never one a
    delivery sets itself (content type, signature, timestamp...)."""
    if len(headers) > MAX_WEBHOOK_HEADERS:
        raise InvalidInput(f"headers: at most {MAX_WEBHOOK_HEADERS}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME_RE.match(name):
            raise InvalidInput(f"headers: '{str(name)[:64]}' is not a header name")
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS or lowered.startswith("x-xshathra-"):
            raise InvalidInput(f"headers: {name} is set by the server")
        if (
            not isinstance(value, str)
            or len(value) > MAX_HEADER_VALUE
            or any(c in value for c in "\r\n\0")
            or not value.isprintable()
        ):
            raise InvalidInput(f"headers: the value of {name} must be one line of text")
        checked[name] = value
    return checked


@dataclass(frozen=True, slots=True)
class WebhookTestResult:
    """What a test event's receiver answered: its HTTP `status`, or None and the `error` that
    kept it from answering."""

    delivery_id: str
    status: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookTester(Protocol):
    """Sends one test delivery now (the dispatcher)."""

    async def send_test(self, webhook: Webhook, body: bytes) -> tuple[int | None, str | None]: ...


# --- the service -------------------------------------------------------------------------------


class ApplicationService:
    """Create, change and delete applications and their webhooks.

    `key_rate_limit_ceiling` bounds the `rate_limit` an app may set with its own key;
    `webhook_max_per_app` the webhooks one app may have; `webhook_allow_private` lets webhook
    URLs reach private addresses (development only)."""

    def __init__(
        self,
        apps: AppStore,
        webhooks: WebhookStore,
        deliveries: DeliveryLog,
        notifier: ChangeNotifier,
        *,
        default_rate_limit: int = DEFAULT_RATE_LIMIT,
        key_rate_limit_ceiling: int = DEFAULT_RATE_LIMIT,
        webhook_max_per_app: int | None = None,
        webhook_allow_private: bool = False,
        webhook_tester: WebhookTester | None = None,
        members: MemberStore | None = None,
        proxy_allow_private: bool | None = None,
    ) -> None:
        self._members = members
        self._apps = apps
        self._webhooks = webhooks
        self._deliveries = deliveries
        self._notifier = notifier
        self._default_rate_limit = default_rate_limit
        self._key_ceiling = key_rate_limit_ceiling
        self._webhook_max = webhook_max_per_app
        self._allow_private = webhook_allow_private
        self._tester = webhook_tester
        # Backend proxy endpoints: their own switch, else the webhooks' (SPEC §9).
        self._proxy_allow_private = (
            webhook_allow_private if proxy_allow_private is None else proxy_allow_private
        )

    # --- applications --------------------------------------------------------------------------

    async def get_application(self, app_id: str) -> Application | None:
        return await self._apps.get_app(app_id)

    async def list_applications(self, owner_id: str | None = None) -> list[Application]:
        """All applications (oldest first), or those of one dashboard owner."""
        return await self._apps.list_apps(owner_id)

    async def create_application(
        self,
        *,
        name: str,
        app_id: str | None = None,
        allowed_domain: str | None = None,
        rate_limit: int | None = None,
        owner_id: str | None = None,
    ) -> tuple[Application, NewAppKeys]:
        """Create an application with fresh keys; its `api_key` is in the `NewAppKeys` only
        (never stored). Raises `InvalidInput`, or the store's `AppIdRetiredError` (the id
        belonged to a deleted app) or `AppExistsError` (the id is taken)."""
        app, keys = generate_app(
            name=check_name(name),
            app_id=check_app_id(app_id),
            allowed_domain=check_domain(allowed_domain),
            rate_limit=check_rate_limit(rate_limit) or self._default_rate_limit,
            owner_id=owner_id,
        )
        await self._apps.create_app(app)
        return app, keys

    async def update_project(
        self, app: Application, update: AppUpdate, *, operator: bool
    ) -> Application:
        """A change made in the dashboard by a member whose role allows it (the dashboard
        checks the role). Written unconditionally, as the admin's: a member acts with their
        account, not with the app's key, and may enable the app again. Only the operator may
        set `rate_limit` above the ceiling of an app's own key (XSHATHRA_APP_RATE_LIMIT_CEILING)."""
        if "quotas" in update and not operator:
            raise OperatorOnly("quotas are set by the operator")
        if "rate_limit" in update and not operator:
            check_rate_limit(update["rate_limit"], self._key_ceiling)
        return await self.update_application(app, update, as_admin=True)

    @property
    def key_rate_limit_ceiling(self) -> int:
        return self._key_ceiling

    async def update_application(
        self, app: Application, update: AppUpdate, *, as_admin: bool
    ) -> Application:
        """Write only the fields in `update`, and return the app as stored afterwards.

        Made with the app's own key (`as_admin` False), the change holds only while `app`'s
        key is still the current one and the app enabled, checked in the same statement
        that writes: a regeneration or suspension made meanwhile always wins, and the change
        is refused with `KeyReplaced` or `AppDisabled` (`NotFound` if the app is gone). The
        app's own key may set `rate_limit` up to the operator's ceiling only."""
        changes: AppChanges = {}
        if "name" in update:
            changes["name"] = check_name(update["name"])
        if "allowed_domain" in update:
            changes["allowed_domain"] = check_domain(update["allowed_domain"])
        if "token_rsa_public_key" in update:
            changes["token_rsa_public_key"] = check_public_key(
                update["token_rsa_public_key"], "RSA"
            )
        if "token_ecdsa_public_key" in update:
            changes["token_ecdsa_public_key"] = check_public_key(
                update["token_ecdsa_public_key"], "ECDSA"
            )
        if "token_jwks_url" in update:
            changes["token_jwks_url"] = await self._check_jwks_url(update["token_jwks_url"])
        if "token_audience" in update:
            changes["token_audience"] = check_claim(update["token_audience"], "token_audience")
        if "token_issuer" in update:
            changes["token_issuer"] = check_claim(update["token_issuer"], "token_issuer")
        if "quotas" in update:
            if not as_admin:
                raise OperatorOnly("quotas are set by the operator (admin key)")
            changes["quotas"] = check_quotas(app.quotas, update["quotas"])
        if "rate_limit" in update:
            check_rate_limit(update["rate_limit"], self.rate_limit_ceiling(app, as_admin=as_admin))
            changes["rate_limit"] = update["rate_limit"]
        if "status" in update:
            # An app key may disable its own app but never enable it: a disabled app's key is
            # refused everywhere, so only the admin re-enables (README, "Keys and tokens").
            changes["status"] = update["status"]
        if "namespaces" in update:
            changes["namespaces"] = check_namespaces(update["namespaces"])
        if "proxies" in update or "namespaces" in changes:
            # Checked together: a namespace may name only a proxy the app will have.
            namespaces = changes.get("namespaces", app.namespaces)
            if "proxies" in update:
                changes["proxies"] = check_proxies(update["proxies"], namespaces)
                await self._check_proxy_urls(changes["proxies"])
            else:
                try:
                    check_namespace_proxies(app.proxies, namespaces)
                except ProxyConfigError as exc:
                    raise proxy_error(exc) from None
        if "pusher_client_events" in update:
            changes["pusher_client_events"] = bool(update["pusher_client_events"])
        if "pusher_subscription_count" in update:
            changes["pusher_subscription_count"] = bool(update["pusher_subscription_count"])
        if "pusher_user_authentication" in update:
            changes["pusher_user_authentication"] = bool(update["pusher_user_authentication"])
        while_key = None if as_admin else app.api_key_hash
        updated = await self._apps.update_app(app.app_id, changes, while_key=while_key)
        if updated is None:
            await self._refuse_stale(app.app_id, while_key)
        await self._notifier.app_changed(updated.app_id)
        return updated

    async def _check_jwks_url(self, url: str | None) -> str | None:
        """An http(s) URL the server may fetch (the webhook rules: no private address unless
        the operator allows it), or None to clear."""
        if url is None or not url.strip():
            return None
        if len(url) > 2048:
            raise InvalidInput("token_jwks_url is too long")
        try:
            await check_webhook_url(url.strip(), allow_private=self._allow_private)
        except UnsafeURLError as exc:
            raise InvalidInput(f"token_jwks_url: {exc}") from None
        return url.strip()

    def rate_limit_ceiling(self, app: Application, *, as_admin: bool) -> int:
        """The highest `rate_limit` the caller may set: any for the operator, else the app's
        own ceiling (a quota) or the deployment's (XSHATHRA_APP_RATE_LIMIT_CEILING)."""
        if as_admin:
            return ADMIN_RATE_LIMIT_CEILING
        own = app.quotas.rate_limit_ceiling
        return own if own is not None else self._key_ceiling

    async def _check_proxy_urls(self, config: ProxyConfig) -> None:
        """A courtesy at save time, as for webhooks: every request is guarded again when made.
        The refusal names the field, not the URL (a URL may carry a credential)."""
        client = config.client.proxy
        urls = [(f"proxies.proxies[{i}]", p.endpoint) for i, p in enumerate(config.proxies)]
        urls += [
            (f"proxies.client.proxy.{kind}", c.endpoint)
            for kind, c in (
                ("connect", client.connect),
                ("refresh", client.refresh),
                ("send", client.send),
            )
            if c.endpoint
        ]
        for field, url in urls:
            try:
                await check_webhook_url(url, allow_private=self._proxy_allow_private)
            except UnsafeURLError as exc:
                raise InvalidInput(f"{field}.endpoint: {exc}", f"{field}.endpoint") from None

    async def regenerate_api_key(
        self, app: Application, *, as_admin: bool
    ) -> tuple[Application, NewAppKeys]:
        """A new API key (shown once, in the `NewAppKeys`); the old one fails at once on every
        node. With the app's own key, conditional as `update_application`."""
        keys = new_api_key()
        while_key = None if as_admin else app.api_key_hash
        updated = await self._apps.set_api_key(app.app_id, keys, while_key=while_key)
        if updated is None:
            await self._refuse_stale(app.app_id, while_key)
        await self._notifier.app_changed(updated.app_id)
        return updated, keys

    async def regenerate_client_key(self, app: Application, *, as_admin: bool) -> Application:
        """A new public client key (the one browsers and Pusher clients name the app by); the
        old one stops finding the app at once on every node. Conditional as
        `update_application` with the app's own key."""
        while_key = None if as_admin else app.api_key_hash
        updated = await self._apps.set_client_key(
            app.app_id, new_secret("xc_"), while_key=while_key
        )
        if updated is None:
            await self._refuse_stale(app.app_id, while_key)
        await self._notifier.app_changed(updated.app_id)
        return updated

    async def regenerate_app_secret(
        self, app: Application, *, grace_seconds: int, as_admin: bool
    ) -> Application:
        """A new `app_secret`; tokens signed with the old one keep verifying for
        `grace_seconds` (0 to 30 days), then fail. With the app's own key, conditional as
        `update_application`."""
        if isinstance(grace_seconds, bool) or not 0 <= grace_seconds <= MAX_SECRET_GRACE:
            raise InvalidInput(f"grace_seconds must be from 0 to {MAX_SECRET_GRACE}")
        rotation = SecretRotation(
            app_secret=new_secret("xss_"),
            previous_until=int(time.time()) + grace_seconds if grace_seconds else 0,
        )
        while_key = None if as_admin else app.api_key_hash
        updated = await self._apps.set_app_secret(app.app_id, rotation, while_key=while_key)
        if updated is None:
            await self._refuse_stale(app.app_id, while_key)
        await self._notifier.app_changed(updated.app_id)
        return updated

    async def list_applications_by_id(self, app_ids: list[str]) -> list[Application]:
        """The applications among `app_ids` that exist, oldest first (one query)."""
        return await self._apps.get_apps(app_ids)

    async def delete_application(self, app_id: str) -> None:
        """Delete the app and all it owns; its app_id is retired for good. `NotFound` if none."""
        if not await self._apps.delete_app(app_id):
            raise NotFound("application not found")
        await self._notifier.app_changed(app_id)

    async def _refuse_stale(self, app_id: AppId, while_key: str | None) -> NoReturn:
        """Why a conditional change matched no row, as the caller's next request would hear
        it: the app is gone, its key was regenerated, or it was disabled."""
        current = await self._apps.get_app(app_id)
        if current is None:
            raise NotFound("application not found")
        if while_key is not None and current.api_key_hash != while_key:
            raise KeyReplaced("invalid API key")
        raise AppDisabled("application is disabled")

    # --- webhooks ------------------------------------------------------------------------------

    async def create_webhook(
        self,
        app_id: str,
        *,
        url: str,
        events: list[str],
        secret: str | None = None,
        rooms: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Webhook, str | None]:
        """Register a webhook for `events` (or "*") at `url`, which must not reach a private
        address. Without `secret` one is generated and returned beside the webhook (shown
        once); with one, None is. `InvalidInput` past the per-app cap."""
        names = check_events(events)
        try:
            await check_webhook_url(url, allow_private=self._allow_private)
        except UnsafeURLError as exc:
            raise InvalidInput(str(exc), "url") from None
        if secret is not None and not 8 <= len(secret) <= 200:
            raise InvalidInput("secret must be 8 to 200 characters")
        chosen = secret or new_secret("whsec_")
        webhook = Webhook(
            id=new_webhook_id(),
            app_id=app_id,
            url=url.strip(),
            secret=chosen,
            events=names,
            rooms=check_rooms(rooms or []),
            headers=check_headers(headers or {}),
        )
        try:
            await self._webhooks.create_webhook(webhook, max_per_app=self._webhook_max)
        except WebhookLimitError as exc:
            raise InvalidInput(str(exc)) from None
        await self._notifier.webhooks_changed(app_id)
        return webhook, (chosen if secret is None else None)

    async def update_webhook(
        self,
        app_id: str,
        webhook_id: str,
        *,
        url: str | None = None,
        events: list[str] | None = None,
        rooms: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
        enabled: bool | None = None,
    ) -> Webhook:
        """Change the fields given (None: left as stored). `NotFound` if the app has no such
        webhook; `InvalidInput` for a value create would refuse too."""
        if url is not None:
            try:
                await check_webhook_url(url, allow_private=self._allow_private)
            except UnsafeURLError as exc:
                raise InvalidInput(str(exc), "url") from None
        changes = WebhookChanges(
            url=url.strip() if url is not None else None,
            events=check_events(events) if events is not None else None,
            rooms=check_rooms(rooms) if rooms is not None else None,
            headers=check_headers(headers) if headers is not None else None,
            enabled=enabled,
        )
        updated = await self._webhooks.update_webhook(app_id, webhook_id, changes)
        if updated is None:
            raise NotFound("webhook not found")
        await self._notifier.webhooks_changed(app_id)
        return updated

    async def list_webhooks(self, app_id: str) -> list[Webhook]:
        """The app's webhooks, oldest first."""
        return await self._webhooks.list_webhooks(app_id)

    async def set_webhook_enabled(self, app_id: str, webhook_id: str, enabled: bool) -> None:
        """Pause or resume one of the app's webhooks. `NotFound` if the app has no such one."""
        if not await self._webhooks.set_enabled(app_id, webhook_id, enabled):
            raise NotFound("webhook not found")
        await self._notifier.webhooks_changed(app_id)

    async def delete_webhook(self, app_id: str, webhook_id: str) -> None:
        """`NotFound` if the app has no such webhook."""
        if not await self._webhooks.delete_webhook(app_id, webhook_id):
            raise NotFound("webhook not found")
        await self._notifier.webhooks_changed(app_id)

    async def list_deliveries(self, app_id: str, webhook_id: str) -> list[Delivery]:
        """The recent deliveries of one of the app's webhooks, newest first."""
        await self._own_webhook(app_id, webhook_id)
        return await self._deliveries.list_for_webhook(webhook_id)

    async def replay_delivery(self, app_id: str, webhook_id: str, delivery_id: str) -> None:
        """Queue a delivery of one of the app's webhooks again."""
        await self._own_webhook(app_id, webhook_id)
        if not await self._deliveries.replay(webhook_id, delivery_id):
            raise NotFound("delivery not found")

    async def _own_webhook(self, app_id: str, webhook_id: str) -> None:
        """A webhook id reaches deliveries only through the app that owns it."""
        if await self._webhooks.get_webhook(app_id, webhook_id) is None:
            raise NotFound("webhook not found")

    async def send_test_event(self, app_id: str, webhook_id: str) -> WebhookTestResult:
        """Send one of the app's webhooks a signed `test` event now, enabled or not, whatever
        events it wants, and wait for its answer: the API's `POST /api/webhooks/:id/test` and
        the dashboard's "Send test event" both call this. The attempt is recorded among the
        webhook's recent deliveries (so it can be replayed) and never retried."""
        webhook = await self._webhooks.get_webhook(app_id, webhook_id)
        if webhook is None:
            raise NotFound("webhook not found")
        if self._tester is None:
            raise InvalidInput("webhook tests need a running node")
        delivery = make_test_delivery(webhook)
        status, error = await self._tester.send_test(webhook, delivery.body.encode())
        await self._deliveries.record_attempt(delivery, status, error)
        return WebhookTestResult(delivery.id, status, error)

    # --- project members (the dashboard's roles) -----------------------------------------------

    def _member_store(self) -> MemberStore:
        if self._members is None:
            raise ServiceError("project members are not available here")
        return self._members

    async def role_of(self, app: Application, account_id: str, *, operator: bool) -> Role | None:
        """What the account may do on the app: the operator and the app's owner own it; else
        the role of its membership, or None (the app is not theirs to see)."""
        if operator or app.owner_id == account_id:
            return Role.OWNER
        return await self._member_store().role(app.app_id, account_id)

    async def projects_of(self, account_id: str) -> list[tuple[AppSummary, Role]]:
        """The apps the account owns or is a member of, oldest first, with its role on each
        (summaries: a list never reads keys or secrets)."""
        roles = await self._member_store().roles_of(account_id)
        apps = await self._apps.list_summaries(owner_id=account_id, app_ids=list(roles))
        return [(a, Role.OWNER if a.owner_id == account_id else roles[a.app_id]) for a in apps]

    async def list_summaries(self) -> list[AppSummary]:
        """Every application, oldest first, without keys or secrets (the operator's list)."""
        return await self._apps.list_summaries()

    async def list_members(self, app_id: str) -> list[Member]:
        return await self._member_store().list_for_app(app_id)

    async def add_member(
        self,
        app_id: str,
        *,
        email: str,
        role: str,
        account_id: str | None,
        invitation_hash: str | None = None,
    ) -> Member:
        """Add a person to the project: an account (`account_id`), or an email whose row
        waits for the sign-up made with the invitation whose hash is `invitation_hash`."""
        member = Member(
            member_id="mem_" + secrets.token_hex(8),
            app_id=app_id,
            email=email,
            role=check_role(role),
            account_id=account_id,
            created_at=utcnow(),
        )
        try:
            await self._member_store().add(member, invitation_hash=invitation_hash)
        except MemberExistsError:
            raise InvalidInput(f"{email} is already a member of this project", "email") from None
        return member

    async def set_member_role(self, app_id: str, member_id: str, role: str) -> None:
        if not await self._member_store().set_role(app_id, member_id, check_role(role)):
            raise NotFound("member not found")

    async def remove_member(self, app_id: str, member_id: str) -> None:
        if not await self._member_store().remove(app_id, member_id):
            raise NotFound("member not found")

    async def claim_invitation(self, invitation_hash: str, account_id: str, email: str) -> int:
        """Bind the project memberships waiting for this sign-up invitation to its account."""
        return await self._member_store().claim(invitation_hash, account_id, email)


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput("role must be owner, developer or viewer", "role") from None
