"""Project members with roles (dashboard phase B).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.create_table(
        "project_members",
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column(
            "app_id",
            sa.String(64),
            sa.ForeignKey("applications.app_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "account_id",
            sa.String(64),
            sa.ForeignKey("accounts.account_id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("invitation_hash", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("app_id", "email", name="uq_project_members_app_email"),
    )
    op.create_index("ix_project_members_account", "project_members", ["account_id"])
    op.create_index("ix_project_members_invitation", "project_members", ["invitation_hash"])


def downgrade() -> None:
    op.drop_table("project_members")
