"""Persistent state through SQLAlchemy (SQLite by default, PostgreSQL), with Alembic migrations."""
