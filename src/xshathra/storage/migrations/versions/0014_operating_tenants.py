"""Operating many tenants (issue 18): per-app quotas, app secret rotation, app token keys
(RS256/ES256, aud, iss), webhook rooms and headers, and access rules (blocked users, revoked
tokens, invalidated user tokens).

Revision ID: 0014
Revises: 0013 (re-chained by the lead at merge)
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"


def _app_fk() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "app_id",
        sa.String(64),
        sa.ForeignKey("applications.app_id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("quotas", sa.Text, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("previous_app_secret", sa.String(200), nullable=True))
        batch.add_column(
            sa.Column("previous_secret_until", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("token_rsa_public_key", sa.Text, nullable=True))
        batch.add_column(sa.Column("token_ecdsa_public_key", sa.Text, nullable=True))
        batch.add_column(sa.Column("token_jwks_url", sa.Text, nullable=True))
        batch.add_column(sa.Column("token_audience", sa.String(255), nullable=True))
        batch.add_column(sa.Column("token_issuer", sa.String(255), nullable=True))
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("rooms", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("headers", sa.Text, nullable=False, server_default="{}"))
    op.create_table(
        "blocked_users",
        _app_fk(),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("expire_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "revoked_tokens",
        _app_fk(),
        sa.Column("token_id", sa.String(255), primary_key=True),
        sa.Column("expire_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "user_token_invalidations",
        _app_fk(),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("issued_before", sa.BigInteger, nullable=False),
        sa.Column("expire_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("headers")
        batch.drop_column("rooms")
    op.drop_table("user_token_invalidations")
    op.drop_table("revoked_tokens")
    op.drop_table("blocked_users")
    with op.batch_alter_table("applications") as batch:
        for column in (
            "token_issuer",
            "token_audience",
            "token_jwks_url",
            "token_ecdsa_public_key",
            "token_rsa_public_key",
        ):
            batch.drop_column(column)
        batch.drop_column("previous_secret_until")
        batch.drop_column("previous_app_secret")
        batch.drop_column("quotas")
