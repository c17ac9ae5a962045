"""Release records: every release of a model, its timeline, and one lease per model and environment.

SQLite by default (the local stack's `<state_dir>/records/releases.db`), PostgreSQL for shared
deployments (`pip install 'llm-release[postgres]'`). The schema is created and upgraded by
Alembic on first use. See docs/records.md.
"""

from llm_release.records.store import (
    Lease,
    LeaseHeld,
    RecordsError,
    ReleaseEvent,
    ReleaseRecord,
    ReleaseRecords,
    StateConflict,
    UnknownRelease,
    resolve_url,
)

__all__ = [
    "Lease",
    "LeaseHeld",
    "RecordsError",
    "ReleaseEvent",
    "ReleaseRecord",
    "ReleaseRecords",
    "StateConflict",
    "UnknownRelease",
    "resolve_url",
]
