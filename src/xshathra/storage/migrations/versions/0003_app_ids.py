"""Every app_id ever given out, with a tombstone (deleted_at) for deleted apps: never reused.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "app_ids",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute("INSERT INTO app_ids (app_id) SELECT app_id FROM applications")


def downgrade() -> None:
    op.drop_table("app_ids")
