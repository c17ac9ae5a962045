"""The tables of the release records, as SQLAlchemy Core objects.

Alembic's revisions in `migrations/versions/` create these tables; this module is how the code
reads and writes them. A test compares the two, so a column added here without a revision (or
the other way round) fails before it reaches a database.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

# Alembic keeps its revision in a table of its own name so that the records can share a
# PostgreSQL database with Airflow's metadata, whose Alembic uses `alembic_version`.
VERSION_TABLE = "llm_release_alembic_version"


class UTCDateTime(sa.TypeDecorator):
    """A timezone-aware UTC datetime on every database.

    PostgreSQL stores `timestamptz` and gives back aware datetimes. SQLite has no time type:
    SQLAlchemy stores text without an offset and gives back naive datetimes. This type converts
    to UTC on the way in and marks values as UTC on the way out, so callers always compare
    aware datetimes. Naive datetimes are refused: their timezone would be a guess.
    """

    impl = sa.DateTime
    cache_ok = True

    def __init__(self):
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: give a timezone-aware one")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


metadata = sa.MetaData()

releases = sa.Table(
    "releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("environment", sa.String(255), nullable=False),
    sa.Column("region", sa.String(255), nullable=False),
    sa.Column("strategy", sa.String(32), nullable=False),
    sa.Column("artifact_digest", sa.String(255), nullable=True),
    sa.Column("baseline_version", sa.Integer, nullable=True),
    sa.Column("state", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("requested_by", sa.String(255), nullable=True),
    sa.Column("dag_id", sa.String(250), nullable=True),  # Airflow's ID_LEN
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Index("ix_releases_model_environment", "model", "environment"),
    sa.Index("ix_releases_dag_id_run_id", "dag_id", "run_id"),
)

release_events = sa.Table(
    "release_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("release_id", sa.Integer,
              sa.ForeignKey("releases.id", name="fk_release_events_release_id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("from_state", sa.String(64), nullable=True),
    sa.Column("to_state", sa.String(64), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("actor", sa.String(255), nullable=True),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_release_events_release_id", "release_id"),
)

release_leases = sa.Table(
    "release_leases",
    metadata,
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("environment", sa.String(255), nullable=False),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("release_id", sa.Integer,
              sa.ForeignKey("releases.id", name="fk_release_leases_release_id", ondelete="SET NULL"),
              nullable=True),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("model", "environment", name="pk_release_leases"),
)
