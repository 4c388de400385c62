"""The relational schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Migrations in `storage/migrations` create exactly these tables; this module is what the
stores query through.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


applications = Table(
    "applications",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("app_secret", String(200), nullable=False),
    Column("api_key_hash", String(64), nullable=False, unique=True),
    Column("api_key_hint", String(8), nullable=False),
    Column("client_api_key", String(200), nullable=False, index=True),
    Column("allowed_domain", String(253), nullable=True),
    Column("rate_limit", Integer, nullable=False),
    Column("status", Boolean, nullable=False),
    Column("namespaces", Text, nullable=False),
    # Backend proxies (SPEC §9), JSON; NULL for an app without any (migration 0012).
    Column("proxies", Text, nullable=True),
    Column("owner_id", String(64), nullable=True, index=True),
    # The operator's quotas (tenancy.apps.Quotas) as JSON; "{}": the deployment's limits.
    Column("quotas", Text, nullable=False, server_default="{}"),
    # The app_secret a regeneration replaced, valid until previous_secret_until (unix s).
    Column("previous_app_secret", String(200), nullable=True),
    Column("previous_secret_until", BigInteger, nullable=False, server_default="0"),
    # The app's own token keys (PEM) and the aud/iss its tokens must carry.
    Column("token_rsa_public_key", Text, nullable=True),
    Column("token_ecdsa_public_key", Text, nullable=True),
    Column("token_jwks_url", Text, nullable=True),
    Column("token_audience", String(255), nullable=True),
    Column("token_issuer", String(255), nullable=True),
    Column("pusher_client_events", Boolean, nullable=False, server_default=false()),
    Column("pusher_subscription_count", Boolean, nullable=False, server_default=false()),
    Column("pusher_user_authentication", Boolean, nullable=False, server_default=false()),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Every app_id ever given out. A deleted app's row stays, with `deleted_at` set (a tombstone), so
# the id is never given out again: tokens the old tenant minted, and whatever history or presence
# a broker still holds for it, reach no new tenant. Creating an app inserts here first, so the
# primary key decides between two creates, or a create and a delete, without a race.
app_ids = Table(
    "app_ids",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("deleted_at", UTCDateTime, nullable=True),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "app_id",
        String(64),
        ForeignKey("applications.app_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("url", Text, nullable=False),
    Column("secret", String(200), nullable=False),
    Column("events", Text, nullable=False),
    # JSON: a list of `*` globs of room names (empty: all), an object of custom headers.
    Column("rooms", Text, nullable=False, server_default="[]"),
    Column("headers", Text, nullable=False, server_default="{}"),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_webhooks_app_id", "app_id"),
)

server_state = Table(
    "server_state",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

# Transactional outbox of webhook deliveries: one row per (event, webhook), claimed with a
# lease so that exactly one node attempts it at a time.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column(
        "webhook_id",
        String(64),
        ForeignKey("webhooks.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("app_id", String(64), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("event", String(200), nullable=False),
    Column("room", String(255), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("locked_by", String(64), nullable=True),
    Column("locked_until", UTCDateTime, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_webhook", "webhook_id", "created_at"),
    # Per-app pending count (the cap) and per-app ranking of due rows (fair claiming).
    Index("ix_deliveries_app_status", "app_id", "status", "next_attempt_at"),
)

# Analytics: per-minute counters and per-hour distinct users, summed from every node's flushes.
analytics_counts = Table(
    "analytics_counts",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("bucket", Integer, primary_key=True),  # unix seconds, start of the minute
    Column("connections", Integer, nullable=False),
    Column("events", Integer, nullable=False),
    Column("broadcasts", Integer, nullable=False),
)

analytics_users = Table(
    "analytics_users",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("bucket", Integer, primary_key=True),  # unix seconds, start of the hour
    Column("user_id", String(255), primary_key=True),
)

# What each node has open now; rows older than a few flush intervals belong to dead nodes.
analytics_online = Table(
    "analytics_online",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("app_id", String(64), primary_key=True),
    Column("connections", Integer, nullable=False),
    Column("users", Text, nullable=False),  # JSON list of user ids connected on that node
    Column("updated_at", Integer, nullable=False),  # unix seconds
)

# Dashboard accounts (accounts/models.py). Session ids and invitation tokens are kept hashed.
accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("operator", Boolean, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column(
        "account_id",
        String(64),
        ForeignKey("accounts.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_dashboard_sessions_account", "account_id"),
    Index("ix_dashboard_sessions_expires", "expires_at"),
)

invitations = Table(
    "invitations",
    metadata,
    Column("invitation_id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column(
        "created_by",
        String(64),
        ForeignKey("accounts.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("used_by", String(64), nullable=True),
)

# One row per failed sign-in and key ("account:<email>", "ip:<address>"), for throttling on
# every node alike; rows older than the throttling window are deleted as new ones come.
sign_in_failures = Table(
    "sign_in_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_sign_in_failures_key_at", "key", "at"),
    Index("ix_sign_in_failures_at", "at"),
)

# Project members besides the app's owner (tenancy/members.py); a row with no account waits
# for the sign-up made with its invitation (kept hashed, as every invitation token).
project_members = Table(
    "project_members",
    metadata,
    Column("member_id", String(32), primary_key=True),
    Column(
        "app_id",
        String(64),
        ForeignKey("applications.app_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "account_id",
        String(64),
        ForeignKey("accounts.account_id", ondelete="CASCADE"),
        nullable=True,
    ),
    Column("email", String(254), nullable=False),
    Column("role", String(16), nullable=False),
    Column("invitation_hash", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("app_id", "email", name="uq_project_members_app_email"),
    Index("ix_project_members_account", "account_id"),
    Index("ix_project_members_invitation", "invitation_hash"),
)
# Access rules (tenancy/access.py): blocked users, revoked tokens and invalidated user tokens,
# per app. `expire_at` is unix seconds, 0 for never; expired rows are deleted as new ones come.
blocked_users = Table(
    "blocked_users",
    metadata,
    Column(
        "app_id",
        String(64),
        ForeignKey("applications.app_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(255), primary_key=True),
    Column("expire_at", BigInteger, nullable=False),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column(
        "app_id",
        String(64),
        ForeignKey("applications.app_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("token_id", String(255), primary_key=True),
    Column("expire_at", BigInteger, nullable=False),
)

user_token_invalidations = Table(
    "user_token_invalidations",
    metadata,
    Column(
        "app_id",
        String(64),
        ForeignKey("applications.app_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(255), primary_key=True),
    Column("issued_before", BigInteger, nullable=False),
    Column("expire_at", BigInteger, nullable=False),
)


# invalidate_user_tokens with `channel`: the user's subscription tokens for that channel.
channel_token_invalidations = Table(
    "channel_token_invalidations",
    metadata,
    Column(
        "app_id",
        String(64),
        ForeignKey("applications.app_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(255), primary_key=True),
    Column("channel", String(255), primary_key=True),
    Column("issued_before", BigInteger, nullable=False),
    Column("expire_at", BigInteger, nullable=False),
)
