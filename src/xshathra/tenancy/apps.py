"""Applications (tenants): the record, its namespace options, key handling and the store contract.

This module owns what an application *is*; it performs no I/O. Storage backends implement
`AppStore`; the HTTP API, the engine and the CLI all read applications through it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol, TypedDict

import msgspec
import msgspec.structs

from xshathra.model import AppId
from xshathra.tenancy.proxies import NO_PROXIES, ProxyConfig

APP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
DEFAULT_RATE_LIMIT = 1000
MAX_HISTORY_SIZE = 10_000  # publications kept per channel
MAX_HISTORY_TTL = 30 * 86400  # seconds: as long as a channel's position is kept
DELTA_TYPES = frozenset({"fossil"})
RECOVERY_MODES = frozenset({"", "stream", "cache"})
FEATURE_FLAGS = ("delta_publish", "allow_positioning", "force_positioning", "allow_tags_filter")


class NamespaceOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Channel options of one namespace, named as Centrifugo names them."""

    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    history_size: int = 0
    history_ttl: int = 0  # seconds
    force_recovery: bool = False
    allow_subscribe_for_client: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_client: bool = False
    allow_presence_for_subscriber: bool = False
    allow_history_for_subscriber: bool = False
    # Backend proxies (SPEC §9): each names a proxy of the app's `proxies.proxies`.
    subscribe_proxy_enabled: bool = False
    subscribe_proxy_name: str = "default"
    publish_proxy_enabled: bool = False
    publish_proxy_name: str = "default"
    sub_refresh_proxy_enabled: bool = False
    sub_refresh_proxy_name: str = "default"
    # Channel features of SPEC §8, as Centrifugo names them.
    allowed_delta_types: tuple[str, ...] = ()  # "fossil": subscribers may ask for deltas
    delta_publish: bool = False  # every publication is sent as a delta where negotiated
    force_recovery_mode: str = ""  # "" or "stream": every missed publication; "cache": the last
    allow_positioning: bool = False  # subscribers may ask for `positioned`
    force_positioning: bool = False  # every subscription is positioned
    allow_tags_filter: bool = False  # subscribers may filter publications by tags (`tf`)

    def __post_init__(self) -> None:
        # Checked here, so every surface (HTTP, CLI, stored rows) refuses the same way: msgspec
        # turns the ValueError into a validation error naming the option. An unbounded ttl
        # broke every publish of the namespace on Redis (EXPIRE out of range).
        if not 0 <= self.history_size <= MAX_HISTORY_SIZE:
            raise ValueError(f"history_size must be from 0 to {MAX_HISTORY_SIZE}")
        if not 0 <= self.history_ttl <= MAX_HISTORY_TTL:
            raise ValueError(f"history_ttl must be from 0 to {MAX_HISTORY_TTL} seconds (30 days)")
        # Built from keyword arguments (the application service), msgspec checks no types:
        # the options of the channel features are checked here, and kept as a tuple.
        types = self.allowed_delta_types
        if isinstance(types, str | bytes) or not isinstance(types, list | tuple):
            raise ValueError('allowed_delta_types must be a list such as ["fossil"]')
        unknown = [t for t in types if t not in DELTA_TYPES]
        if unknown:
            raise ValueError('allowed_delta_types may only name "fossil"')
        msgspec.structs.force_setattr(self, "allowed_delta_types", tuple(dict.fromkeys(types)))
        if self.force_recovery_mode not in RECOVERY_MODES:
            raise ValueError('force_recovery_mode must be "", "stream" or "cache"')
        for name in FEATURE_FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")


MAX_QUOTA = 1_000_000_000  # above any deployment's real figures, below any overflow


class Quotas(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """What the operator allows one app (SPEC §11); None: the deployment's own limit. Set
    with the admin key only. The node's limits still apply: the lower of the two holds."""

    max_connections: int | None = None  # open connections, cluster-wide
    max_connections_per_user: int | None = None  # one user's connections, cluster-wide
    max_channels_per_connection: int | None = None
    max_message_size: int | None = None  # bytes of one publication's data
    rate_limit_ceiling: int | None = None  # the highest rate_limit the app's key may set

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and not 1 <= value <= MAX_QUOTA:
                raise ValueError(f"{name} must be from 1 to {MAX_QUOTA}, or null")


NO_QUOTAS = Quotas()


def lowest(limit: int, quota: int | None) -> int:
    """The limit that holds: the node's, or the app's quota when it is lower."""
    return limit if quota is None or quota > limit else quota


# Built-in namespaces (SPEC §4). "" is the default namespace of channels without a prefix.
PUBLIC_NAMESPACE = NamespaceOptions(
    presence=True,
    join_leave=True,
    force_push_join_leave=True,
    history_size=100,
    history_ttl=600,
    force_recovery=False,
    allow_subscribe_for_client=True,
    allow_presence_for_subscriber=True,
    allow_history_for_subscriber=True,
)
DEFAULT_NAMESPACE = NamespaceOptions()
BUILTIN_NAMESPACES: dict[str, NamespaceOptions] = {
    "public": PUBLIC_NAMESPACE,
    "": DEFAULT_NAMESPACE,
}


def new_secret(prefix: str = "") -> str:
    """A random secret of 192 bits, URL-safe, with an optional readable prefix."""
    return prefix + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    """SHA-256 of an API key. Keys are 192-bit random, so a fast hash is enough (no brute force)."""
    return hashlib.sha256(key.encode()).hexdigest()


def keys_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Application:
    """One tenant. `api_key` itself is never stored: only its hash and a short hint.

    `app_secret` is stored as given because the server must verify HS256 tokens that the app's
    backend signs with it (HMAC needs the key itself).
    """

    app_id: AppId
    name: str
    app_secret: str
    api_key_hash: str
    api_key_hint: str
    client_api_key: str
    allowed_domain: str | None = None
    rate_limit: int = DEFAULT_RATE_LIMIT
    status: bool = True
    namespaces: dict[str, NamespaceOptions] = field(default_factory=dict)
    proxies: ProxyConfig = NO_PROXIES
    owner_id: str | None = None
    quotas: Quotas = NO_QUOTAS
    # The app_secret before the last regeneration, still accepted until `previous_secret_until`
    # (unix seconds): tokens the backend signed with it keep working through the grace period.
    previous_app_secret: str | None = None
    previous_secret_until: int = 0
    # Tokens the app's backend signs with its own private key: RS256 and ES256 (P-256) public
    # keys in PEM, and the `aud`/`iss` such tokens must carry when set (Centrifugo's names).
    token_rsa_public_key: str | None = None
    token_ecdsa_public_key: str | None = None
    token_jwks_url: str | None = None  # keys published by the app (RS256/ES256), cached
    token_audience: str | None = None
    token_issuer: str | None = None
    # Pusher protocol (SPEC §10): whether Pusher clients may send `client-` events.
    pusher_client_events: bool = False
    # Pusher's "subscription counting": `pusher_internal:subscription_count` events to the
    # subscribers of non-presence channels as their subscriber count changes.
    pusher_subscription_count: bool = False
    # Pusher's "enforce user authentication": a connection not signed in (`pusher:signin`)
    # within the server's `pusher_signin_timeout` is closed with 4009.
    pusher_user_authentication: bool = False
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def counts_subscribers(self, channel: str) -> bool:
        """Whether the channel's subscribers are told its subscriber count as it changes:
        Pusher's subscription counting, for every channel but presence ones (whose members
        are their count) and a user's own `#` channel."""
        return self.pusher_subscription_count and not channel.startswith(("presence-", "#"))

    def namespace_options(self, namespace: str) -> NamespaceOptions:
        """Options for a namespace: the app's own, else the built-in, else the default one."""
        own = self.namespaces.get(namespace)
        if own is not None:
            return own
        builtin = BUILTIN_NAMESPACES.get(namespace)
        if builtin is not None:
            return builtin
        return self.namespaces.get("", DEFAULT_NAMESPACE)

    def token_secrets(self, now: float) -> tuple[str, ...]:
        """The app secrets a token may be signed with now: the current one, and the previous
        one during its grace period."""
        if self.previous_app_secret and now < self.previous_secret_until:
            return (self.app_secret, self.previous_app_secret)
        return (self.app_secret,)

    def with_changes(self, **changes: object) -> Application:
        return replace(self, updated_at=utcnow(), **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class AppSummary:
    """What a list of applications shows: no keys, no secret, no namespaces (and so cheap to
    read by the thousand)."""

    app_id: AppId
    name: str
    owner_id: str | None
    status: bool
    rate_limit: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewAppKeys:
    """The plaintext keys of a freshly created or regenerated app: shown once, never stored."""

    api_key: str

    @property
    def api_key_hash(self) -> str:
        return hash_key(self.api_key)

    @property
    def api_key_hint(self) -> str:
        return self.api_key[-4:]


@dataclass(frozen=True, slots=True)
class SecretRotation:
    """A new app_secret and until when (unix seconds) the one it replaces stays valid."""

    app_secret: str
    previous_until: int


def new_api_key() -> NewAppKeys:
    return NewAppKeys(new_secret("xs_"))


class AppChanges(TypedDict, total=False):
    """The fields an update may set; a field that is absent is left as stored. Keys and
    `created_at` are not here: regeneration has its own statement (`AppStore.set_api_key`)."""

    name: str
    allowed_domain: str | None
    rate_limit: int
    status: bool
    namespaces: dict[str, NamespaceOptions]
    quotas: Quotas
    token_rsa_public_key: str | None
    token_ecdsa_public_key: str | None
    token_jwks_url: str | None
    token_audience: str | None
    token_issuer: str | None
    proxies: ProxyConfig
    pusher_client_events: bool
    pusher_subscription_count: bool
    pusher_user_authentication: bool


def generate_app(
    *,
    name: str,
    app_id: str | None = None,
    allowed_domain: str | None = None,
    rate_limit: int = DEFAULT_RATE_LIMIT,
    owner_id: str | None = None,
) -> tuple[Application, NewAppKeys]:
    """Create a new application record with fresh random keys."""
    keys = new_api_key()
    app = Application(
        app_id=AppId(app_id or "app_" + secrets.token_hex(8)),
        name=name,
        app_secret=new_secret("xss_"),
        api_key_hash=keys.api_key_hash,
        api_key_hint=keys.api_key_hint,
        client_api_key=new_secret("xc_"),
        allowed_domain=allowed_domain,
        rate_limit=rate_limit,
        owner_id=owner_id,
    )
    return app, keys


def regenerate_api_key(app: Application) -> tuple[Application, NewAppKeys]:
    """The record as it will be once `keys` replace its API key (the store's `set_api_key`
    writes only the key columns)."""
    keys = new_api_key()
    return app.with_changes(api_key_hash=keys.api_key_hash, api_key_hint=keys.api_key_hint), keys


class AppExistsError(Exception):
    """An application with this app_id already exists."""


class AppIdRetiredError(AppExistsError):
    """The app_id belonged to an application that was deleted: it is never given out again, so
    nothing of the old tenant (tokens it minted, history, presence) can reach a new one."""


class AppStore(Protocol):
    """Persistent applications. Implementations: `storage.apps.SqlAppStore` (SQLite, PostgreSQL).

    Changes are written field by field, each in one conditional statement, never as a whole
    record read earlier: a request that started before the admin regenerated a key or disabled
    the app must not write the old key or status back (a lost update).
    """

    async def create_app(self, app: Application) -> None:
        """Insert a new app; raises `AppExistsError` if the app_id is taken, or
        `AppIdRetiredError` if it belonged to a deleted app."""

    async def get_app(self, app_id: str) -> Application | None: ...

    async def find_by_api_key_hash(self, key_hash: str) -> Application | None: ...

    async def find_by_client_key(self, client_key: str) -> Application | None:
        """The app whose public `client_api_key` this is (a client connecting without a
        token names its app so, SPEC §9)."""

    async def list_apps(self, owner_id: str | None = None) -> list[Application]:
        """All apps (ordered by created_at), or only those of one dashboard owner."""

    async def get_apps(self, app_ids: list[str]) -> list[Application]:
        """The apps among `app_ids` that exist (ordered by created_at), in one query."""

    async def list_summaries(
        self, owner_id: str | None = None, app_ids: list[str] | None = None
    ) -> list[AppSummary]:
        """Summaries of all apps, or of one owner's plus those among `app_ids` (either
        matches), ordered by created_at."""

    async def update_app(
        self, app_id: str, changes: AppChanges, *, while_key: str | None = None
    ) -> Application | None:
        """Set only the given fields (and `updated_at`). With `while_key` (the API key hash
        that authenticated the caller), only while that is still the app's key and the app is
        enabled. The app as stored afterwards, or None when no row matched."""

    async def set_api_key(
        self, app_id: str, keys: NewAppKeys, *, while_key: str | None = None
    ) -> Application | None:
        """Replace the API key (hash and hint), with `while_key` as in `update_app`."""

    async def set_client_key(
        self, app_id: str, client_api_key: str, *, while_key: str | None = None
    ) -> Application | None:
        """Replace the public client key, with `while_key` as in `update_app`."""

    async def set_app_secret(
        self, app_id: str, secret: SecretRotation, *, while_key: str | None = None
    ) -> Application | None:
        """Replace `app_secret`, keeping the one it replaces valid until `secret.until`
        (unix seconds; 0: not at all), with `while_key` as in `update_app`."""

    async def delete_app(self, app_id: str) -> bool:
        """Delete the app and everything SQL holds for it, and retire its app_id for good;
        False if there was none."""
