"""Alembic environment and revisions of the release records (run by ReleaseRecords.upgrade)."""
