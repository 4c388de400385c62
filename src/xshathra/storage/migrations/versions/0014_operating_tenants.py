"""Operating many tenants (issue 18): access rules (blocked users, revoked tokens, invalidated
user tokens).

Revision ID: 0014
Revises: 0010 (re-chained by the lead at merge)
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0010"


def _app_fk() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "app_id",
        sa.String(64),
        sa.ForeignKey("applications.app_id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
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
    op.drop_table("user_token_invalidations")
    op.drop_table("revoked_tokens")
    op.drop_table("blocked_users")
