"""Pusher protocol: the per-app `pusher_client_events` switch, and an index to find an app by
its public `client_api_key` (Pusher's `key`, named in every Pusher WebSocket URL).

Revision ID: 0013
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0010"


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(
            sa.Column("pusher_client_events", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_index("ix_applications_client_api_key", "applications", ["client_api_key"])


def downgrade() -> None:
    op.drop_index("ix_applications_client_api_key", table_name="applications")
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("pusher_client_events")
