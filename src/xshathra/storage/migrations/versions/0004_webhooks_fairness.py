"""Index for fair, per-app webhook claiming and the per-app pending-delivery count.

Revision ID: 0004
Revises: 0002 (to be rebased onto 0003 when the tombstone migration lands)
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_app_status", "webhook_deliveries", ["app_id", "status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_app_status", table_name="webhook_deliveries")
