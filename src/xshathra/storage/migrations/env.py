"""Alembic environment: migrations run on a connection handed in by `storage.database`.

That connection is already inside the transaction that holds the migration lock, so Alembic
joins it instead of opening its own; `storage.database` commits.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through xshathra.storage.database.open_database")
# render_as_batch: SQLite cannot ALTER most things, so later revisions copy tables instead.
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
