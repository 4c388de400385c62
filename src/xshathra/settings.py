"""Server settings, read from the environment (prefix XSHATHRA_), a `.env` file and CLI flags.

This module only describes configuration; it never opens connections or generates secrets
(the composition root does that, see `server.py`).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can set. Secrets are `SecretStr` so they never print by accident."""

    model_config = SettingsConfigDict(
        env_prefix="XSHATHRA_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 3001
    node_name: str = ""
    # Processes serving the one port (SPEC §12): a number, or "auto" for one per core. More
    # than one needs a broker they share (XSHATHRA_BROKER_URL redis:// or nats://).
    workers: int | Literal["auto"] = Field(default=1)
    log_level: str = "info"
    public_url: str = ""

    admin_api_key: SecretStr | None = None
    # Development only: accept an admin key or HMAC secret shorter than 32 bytes (with a warning).
    allow_weak_secrets: bool = False
    token_hmac_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "XSHATHRA_TOKEN_HMAC_SECRET",
            "CENTRIFUGO_TOKEN_HMAC_SECRET_KEY",
            "CENTRIFUGO_TOKEN_HMAC_SECRET",
        ),
    )
    # During a rotation of the HMAC secret: the one it replaces, still accepted when verifying
    # tokens (new tokens are signed with token_hmac_secret). Unset it once old tokens expired.
    token_hmac_previous_secret: SecretStr | None = None
    database_url: str = "sqlite:///./xshathra.db"
    broker_url: str = "memory://"
    broker_prefix: str = "xs"  # key and topic prefix in a shared Redis: one per deployment
    webhook_allow_private: bool = False
    webhook_retry_base: float = 2.0  # seconds before the first retry; doubles each time
    webhook_timeout: float = 10.0  # total deadline of one delivery attempt, in seconds
    webhook_connect_timeout: float = 5.0
    webhook_concurrency: int = 16  # delivery attempts in flight per node
    webhook_concurrency_per_app: int = 4  # of those, at most this many for one app
    webhook_max_per_app: int = 10  # webhooks one app can register
    # Deliveries of one app waiting to go out; more are recorded as failed ("dropped").
    webhook_max_pending_per_app: int = 10_000
    webhook_delivery_retention_days: float = 7.0  # delivered/failed rows kept this long
    # user-left and room-vacated wait this long (seconds); a user or room back within it
    # drops both the leave and the join (a page reload reports nothing). 0: at once.
    webhook_leave_delay: float = Field(default=3.0, ge=0, le=300)
    # Backend proxies (SPEC §9): calls one app may have in flight on a node (past it: 100 at
    # once), and whether they may reach private addresses (unset: as webhook_allow_private).
    proxy_concurrency_per_app: int = Field(default=128, ge=1, le=10_000)
    proxy_allow_private: bool | None = None

    # Limits (SPEC §6): every queue and count is bounded.
    max_message_size: int = 65536
    max_request_body: int = 1_048_576
    # A request head (request line and headers, WebSocket upgrades included) larger than this
    # is answered 431; one not complete within header_timeout seconds is answered 408.
    max_header_bytes: int = 65_536
    header_timeout: float = 10.0
    max_channels_per_connection: int = 128
    max_connections_per_app: int = 10_000
    client_command_rate: float = 100.0  # commands per second, sustained
    client_command_burst: int = 200
    client_queue_max_bytes: int = 4_194_304
    ping_interval: int = 25  # seconds between server pings
    # A shared presence store drops a client's entry `presence_ttl` seconds after its node
    # last refreshed it (a node that died stops refreshing); nodes refresh at a third of it.
    presence_ttl: int = 60
    connect_timeout: float = 10.0  # seconds for the first (connect) command
    # Bytes a WebSocket may send and be sent (pongs) before its connect succeeds; never less
    # than one message of max_message_size. Past it, the connection is closed (3501).
    preconnect_max_bytes: int = 131_072
    # Clients refresh tokens when their ttl runs out; this grace (as Centrifugo's
    # client_expired_close_delay) lets the refresh arrive before the connection is closed.
    expired_close_delay: float = 25.0
    # Every node publishes its counts this often (seconds); `info` and the cluster-wide
    # max_connections quota read the latest of each node, which counts as gone after three.
    node_stats_interval: float = Field(default=1.0, gt=0)
    # How long `channels` and `connections` wait for the other nodes' answers (seconds).
    cluster_query_timeout: float = Field(default=1.0, gt=0)
    # Pusher apps with `pusher_user_authentication`: seconds a connection has to sign in
    # (`pusher:signin`) before it is closed with 4009 (Pusher's 30 s).
    pusher_signin_timeout: float = Field(default=30.0, gt=0)
    # Each node re-reads an app's access rules (blocked users, revoked tokens) this often;
    # changes reach every node at once through the broker, this bounds a lost message.
    access_rules_ttl: float = Field(default=30.0, gt=0)
    # Positioned subscriptions (namespace option force_positioning): seconds between checks
    # of each channel's stream top against what was delivered; a gap disconnects with 3010.
    position_check_interval: float = Field(default=40.0, gt=0)
    # permessage-deflate on WebSocket (off by default: it costs CPU per message). When on, a
    # client that offers it gets messages of at least compression_min_size bytes compressed
    # at this zlib level (1 fastest .. 9 smallest); each message is compressed alone, once
    # for every subscriber it goes to.
    websocket_compression: bool = False
    websocket_compression_level: int = Field(default=1, ge=1, le=9)
    websocket_compression_min_size: int = Field(default=128, ge=0)
    token_rate_limit: int = 100  # per minute per client IP on the token endpoints
    default_app_rate_limit: int = 1000  # per minute per app on the HTTP API
    # The highest rate_limit an app may set with its own key (the admin key may set any).
    app_rate_limit_ceiling: int = Field(default=1000, ge=1)
    # History held by the memory broker, in bytes (publications and channel positions): per
    # node and per app. Over budget the oldest history goes (the app's over its own first);
    # clients recovering across it are told recovered=false. Shared brokers (Redis, NATS) are
    # bounded by history_size, history_ttl and their own memory settings instead.
    history_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    history_max_bytes_per_app: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    # The most one history reply or one recovery may carry (half the per-client queue, so a
    # reply alone never makes its client a slow consumer). A history call returns what fits;
    # a recovery that does not fit answers recovered=false.
    max_history_reply_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024)
    # Fan-out of one server API request: each channel of a broadcast and each command of a
    # batch (a broadcast inside a batch: each of its channels) is one unit of the app's
    # rate limit, and one request may ask for at most this many.
    max_broadcast_channels: int = 1000
    max_batch_commands: int = 1000
    # Failed API-key / admin-key attempts per client address and minute, after which the
    # address is answered 429 before any key is checked (0: never throttle).
    auth_failure_limit: int = 30
    # Addresses (IPs or CIDRs, comma-separated) of the reverse proxies whose
    # X-Forwarded-For / X-Forwarded-Proto are believed. Empty: none, the peer is the client.
    trusted_proxies: str = ""

    # The dashboard (SPEC §7). Sign-up: `open` to anyone, by `invite`ation link, or `closed`
    # (accounts from the CLI only); the deployment's first account may always sign up.
    signup: Literal["open", "invite", "closed"] = "invite"
    dashboard_session_ttl: int = Field(default=7 * 86400, ge=300)  # seconds a sign-in lasts
    invitation_ttl: int = Field(default=7 * 86400, ge=300)  # seconds an invitation link works

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, value: object) -> int | str:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            count = int(str(value).strip())
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError("must be a number of processes (1 or more) or 'auto'")
        return count

    def worker_count(self) -> int:
        """XSHATHRA_WORKERS as a number of processes ("auto": one per core)."""
        if self.workers == "auto":
            return max(1, os.cpu_count() or 1)
        return self.workers

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        for entry in proxy_entries(value):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
        return value


def proxy_entries(value: str) -> list[str]:
    """XSHATHRA_TRUSTED_PROXIES as a list: "127.0.0.1, 10.0.0.0/8" -> ["127.0.0.1", ...]."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]
