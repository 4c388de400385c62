"""Webhook delivery outbox and analytics tables.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "webhook_id",
            sa.String(64),
            sa.ForeignKey("webhooks.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("room", sa.String(255), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_by", sa.String(64), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_webhook", "webhook_deliveries", ["webhook_id", "created_at"])
    op.create_table(
        "analytics_counts",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("connections", sa.Integer, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("broadcasts", sa.Integer, nullable=False),
    )
    op.create_table(
        "analytics_users",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
    )
    op.create_table(
        "analytics_online",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("connections", sa.Integer, nullable=False),
        sa.Column("users", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("analytics_online")
    op.drop_table("analytics_users")
    op.drop_table("analytics_counts")
    op.drop_table("webhook_deliveries")
