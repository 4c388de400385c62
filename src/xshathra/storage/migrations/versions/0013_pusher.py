"""Pusher protocol: the per-app `pusher_client_events` switch (the index on `client_api_key`,
Pusher's `key`, came with 0012's proxies, which find apps by it too).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(
            sa.Column("pusher_client_events", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("pusher_client_events")
