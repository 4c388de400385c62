"""Server settings, read from the environment (prefix XSHATHRA_), a `.env` file and CLI flags.

This module only describes configuration; it never opens connections or generates secrets
(the composition root does that, see `server.py`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can set. Secrets are `SecretStr` so they never print by accident."""

    model_config = SettingsConfigDict(
        env_prefix="XSHATHRA_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 3001
    node_name: str = ""
    log_level: str = "info"
    public_url: str = ""

    admin_api_key: SecretStr | None = None
    token_hmac_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "XSHATHRA_TOKEN_HMAC_SECRET",
            "CENTRIFUGO_TOKEN_HMAC_SECRET_KEY",
            "CENTRIFUGO_TOKEN_HMAC_SECRET",
        ),
    )
    database_url: str = "sqlite:///./xshathra.db"
    broker_url: str = "memory://"
    broker_prefix: str = "xs"  # key and topic prefix in a shared Redis: one per deployment
    webhook_allow_private: bool = False
    webhook_retry_base: float = 2.0  # seconds before the first retry; doubles each time
    webhook_timeout: float = 10.0

    # Limits (SPEC §6): every queue and count is bounded.
    max_message_size: int = 65536
    max_request_body: int = 1_048_576
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
    # Clients refresh tokens when their ttl runs out; this grace (as Centrifugo's
    # client_expired_close_delay) lets the refresh arrive before the connection is closed.
    expired_close_delay: float = 25.0
    token_rate_limit: int = 100  # per minute per client IP on the token endpoints
    default_app_rate_limit: int = 1000  # per minute per app on the HTTP API
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

    # The dashboard (SPEC §7). Sign-up: `open` to anyone, by `invite`ation link, or `closed`
    # (accounts from the CLI only); the deployment's first account may always sign up.
    signup: Literal["open", "invite", "closed"] = "invite"
    dashboard_session_ttl: int = Field(default=7 * 86400, ge=300)  # seconds a sign-in lasts
    invitation_ttl: int = Field(default=7 * 86400, ge=300)  # seconds an invitation link works
