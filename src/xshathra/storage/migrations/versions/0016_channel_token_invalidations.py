"""invalidate_user_tokens with `channel` (Centrifugo PRO): a user's subscription tokens for one
channel issued before a moment, kept apart from the connection-token invalidations.

Revision ID: 0016
Revises: 0015 (0015_pusher_features)
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    op.create_table(
        "channel_token_invalidations",
        sa.Column(
            "app_id",
            sa.String(64),
            sa.ForeignKey("applications.app_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("channel", sa.String(255), primary_key=True),
        sa.Column("issued_before", sa.BigInteger, nullable=False),
        sa.Column("expire_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("channel_token_invalidations")
