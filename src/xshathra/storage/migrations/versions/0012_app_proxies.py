"""Backend proxies per application (SPEC §9), and the lookup of an app by its public client
key that a client connecting without a token uses.

Revision ID: 0012
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("proxies", sa.Text, nullable=True))
    op.create_index("ix_applications_client_api_key", "applications", ["client_api_key"])


def downgrade() -> None:
    op.drop_index("ix_applications_client_api_key", table_name="applications")
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("proxies")
