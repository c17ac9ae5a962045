"""Alembic environment of the release records.

ReleaseRecords.upgrade() runs this with its own connection in `config.attributes["connection"]`
(so SQLite gets its pragmas and BEGIN IMMEDIATE); the `alembic` command line, given
`-x url=...` or `sqlalchemy.url`, gets one from an engine set up the same way.

The whole upgrade is one transaction that first takes a lock, so two processes starting at once
(two Airflow workers on a fresh database) do not both create the tables: the second waits, then
finds the database at head and does nothing.
- PostgreSQL: a transaction-scoped advisory lock (released at commit or rollback).
- SQLite: BEGIN IMMEDIATE takes the database's write lock before the version table is read
  (ReleaseRecords' engine does that; SQLite's DDL is transactional).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from llm_release.records.schema import VERSION_TABLE, metadata

# Any constant shared by every process that migrates these records: "llmr" in ASCII.
ADVISORY_LOCK_KEY = 0x6C6C6D72


def _lock(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})


def _migrate(connection: sa.Connection) -> None:
    with connection.begin():
        _lock(connection)
        # The transaction is already open, so Alembic runs inside it and leaves the commit to us.
        context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                          render_as_batch=connection.dialect.name == "sqlite")
        context.run_migrations()


def run_migrations_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set sqlalchemy.url")
    from llm_release.records.store import ReleaseRecords

    records = ReleaseRecords(url, migrate=False)  # the same engine set-up as at run time
    try:
        with records.migration_connection() as own:
            _migrate(own)
    finally:
        records.close()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      version_table=VERSION_TABLE, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
