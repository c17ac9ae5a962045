"""Release records: releases, their events, and one lease per model and environment.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
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
        sa.Column("dag_id", sa.String(250), nullable=True),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("context", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_releases_model_environment", "releases", ["model", "environment"])
    op.create_index("ix_releases_dag_id_run_id", "releases", ["dag_id", "run_id"])

    op.create_table(
        "release_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("release_id", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(64), nullable=True),
        sa.Column("to_state", sa.String(64), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("data", sa.JSON, nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"], name="fk_release_events_release_id",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_release_events_release_id", "release_events", ["release_id"])

    op.create_table(
        "release_leases",
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("environment", sa.String(255), nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("release_id", sa.Integer, nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        # The primary key is what makes a lease exclusive: two inserts for the same model and
        # environment cannot both commit.
        sa.PrimaryKeyConstraint("model", "environment", name="pk_release_leases"),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"], name="fk_release_leases_release_id",
                                ondelete="SET NULL"),
    )


def downgrade() -> None:
    op.drop_table("release_leases")
    op.drop_index("ix_release_events_release_id", table_name="release_events")
    op.drop_table("release_events")
    op.drop_index("ix_releases_dag_id_run_id", table_name="releases")
    op.drop_index("ix_releases_model_environment", table_name="releases")
    op.drop_table("releases")
