"""Server settings, read from the environment (prefix XSHATHRA_), a `.env` file and CLI flags.

This module only describes configuration; it never opens connections or generates secrets
(the composition root does that, see `server.py`).
"""

from __future__ import annotations

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
    # The highest rate_limit an app may set with its own key (the admin key may set any).
    app_rate_limit_ceiling: int = Field(default=1000, ge=1)
