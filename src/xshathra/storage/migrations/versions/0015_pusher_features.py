"""Pusher protocol: the per-app switches of subscription counting
(`pusher_subscription_count`) and enforced user authentication (`pusher_user_authentication`).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        for name in ("pusher_subscription_count", "pusher_user_authentication"):
            batch.add_column(sa.Column(name, sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("pusher_user_authentication")
        batch.drop_column("pusher_subscription_count")
