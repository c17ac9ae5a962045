"""Release records: who released what, when, every step and verdict, and how it ended.

Every release of a model leaves one row in `releases` and an append-only timeline in
`release_events`. The release state machine writes its state here after every transition, so a
retried Airflow task reads where the release stands instead of starting over, and two tasks that
disagree about the state cannot both win (`transition` is a compare-and-set). A lease per model
and environment keeps two releases of the same model from shifting the same traffic at once.

SQLite (one file, the local default) and PostgreSQL (shared by every Airflow worker) behave the
same; the tests run every case on both.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from llm_release.errors import LLMReleaseError, SpecError
from llm_release.records.schema import VERSION_TABLE, release_events, release_leases, releases

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
RECORDS_URL_VAR = "LLM_RELEASE_RECORDS_URL"
OUTCOMES = ("promoted", "passed", "rolled_back", "failed", "refused")
PASSING_OUTCOMES = ("promoted", "passed")
# How long a SQLite writer waits for another writer's lock before giving up ("database is
# locked"). Every write here is a few statements, so 30 s only runs out when something is stuck.
SQLITE_BUSY_TIMEOUT_S = 30.0
POSTGRES_CONNECT_TIMEOUT_S = 10
# A lease insert that loses a race on PostgreSQL raises IntegrityError; the next attempt sees
# the winner's committed row and decides by the rules. One retry suffices; three is headroom.
LEASE_ATTEMPTS = 3

# Importing Alembic logs one INFO line per built-in plugin it registers; a CLI running at INFO
# (`llm-release history`) would print them on every call. An explicit level set elsewhere wins.
if logging.getLogger("alembic.runtime.plugins").level == logging.NOTSET:
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


# -- errors ------------------------------------------------------------------------------------
class RecordsError(LLMReleaseError):
    """The release records could not be read or written (database unreachable, locked, ...).

    Transient by default: the database may be back on the next try.
    """


class StateConflict(LLMReleaseError):
    """A compare-and-set on a release's state lost: the release is not in the expected state.

    Another task (or a retry of this one) moved it first. Permanent: repeating the same
    transition cannot succeed; read the record again and decide from its actual state.
    """

    permanent = True

    def __init__(self, release_id: int, expected: tuple[str, ...], actual: str, message: str | None = None):
        self.release_id = release_id
        self.expected = tuple(expected)
        self.actual = actual
        super().__init__(message or (
            f"release {release_id} is in state {actual!r}, not {' or '.join(map(repr, self.expected))}: "
            f"another task moved it first; read the record again and continue from {actual!r}"))

    def __reduce__(self):
        return type(self), (self.release_id, self.expected, self.actual, str(self))


class LeaseHeld(LLMReleaseError):
    """Another release holds the lease of this model and environment.

    Transient: the holder finishes (and releases it) or its lease expires, so retrying later
    can succeed. The message names the holder and when its lease expires.
    """

    def __init__(self, model: str, environment: str, holder: str, release_id: int | None, expires_at: datetime):
        self.model = model
        self.environment = environment
        self.holder = holder
        self.release_id = release_id
        self.expires_at = expires_at
        left = (expires_at - _now()).total_seconds()
        of_release = f" (release {release_id})" if release_id is not None else ""
        super().__init__(
            f"{model} in {environment} is being released by {holder}{of_release}; its lease expires at "
            f"{_iso(expires_at)} (in {max(left, 0):.0f} s): wait for that release to finish or its lease to expire")

    def __reduce__(self):
        return type(self), (self.model, self.environment, self.holder, self.release_id, self.expires_at)


class UnknownRelease(LLMReleaseError):
    """No release with this id: a wrong id, or records of another database. Permanent."""

    permanent = True

    def __init__(self, release_id: int, where: str = "the release records"):
        self.release_id = release_id
        self.where = where
        super().__init__(f"release {release_id} does not exist in {where}")

    def __reduce__(self):
        return type(self), (self.release_id, self.where)


# -- values ------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


@dataclass(frozen=True)
class ReleaseEvent:
    """One entry of a release's timeline: a transition, a traffic step, a verdict, an approval..."""

    id: int
    release_id: int
    at: datetime
    kind: str
    from_state: str | None
    to_state: str | None
    message: str
    actor: str | None
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "release_id": self.release_id, "at": _iso(self.at), "kind": self.kind,
                "from_state": self.from_state, "to_state": self.to_state, "message": self.message,
                "actor": self.actor, "data": self.data}


@dataclass(frozen=True)
class ReleaseRecord:
    """One release of one model version to one environment, with its timeline (oldest first)."""

    id: int
    model: str
    version: int
    environment: str
    region: str
    strategy: str
    artifact_digest: str | None
    baseline_version: int | None
    state: str
    outcome: str | None
    reason: str | None
    requested_by: str | None
    dag_id: str | None
    run_id: str | None
    spec: dict
    context: dict
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    events: tuple[ReleaseEvent, ...] = ()

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def duration_s(self) -> float | None:
        """Seconds from request to finish; None while the release runs."""
        return (self.finished_at - self.created_at).total_seconds() if self.finished_at else None

    def to_dict(self) -> dict:
        """JSON-ready: times as ISO 8601 UTC ("...Z"), events included."""
        return {"id": self.id, "model": self.model, "version": self.version, "environment": self.environment,
                "region": self.region, "strategy": self.strategy, "artifact_digest": self.artifact_digest,
                "baseline_version": self.baseline_version, "state": self.state, "outcome": self.outcome,
                "reason": self.reason, "requested_by": self.requested_by, "dag_id": self.dag_id,
                "run_id": self.run_id, "spec": self.spec, "context": self.context,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
                "finished_at": _iso(self.finished_at), "duration_s": self.duration_s,
                "events": [event.to_dict() for event in self.events]}


@dataclass(frozen=True)
class Lease:
    """Who may release `model` in `environment` until `expires_at`."""

    model: str
    environment: str
    holder: str
    release_id: int | None
    acquired_at: datetime
    expires_at: datetime

    def expired(self, now: datetime | None = None) -> bool:
        return (now or _now()) >= self.expires_at


def _jsonable(value: Any) -> Any:
    """`value` with what JSON cannot hold made plain.

    Verdict numbers can be NaN or infinite (no samples, a zero baseline): PostgreSQL's json type
    refuses those tokens, so they are kept as the strings "nan", "inf", "-inf". Times become ISO
    strings, enums their values, paths strings. Anything else unknown is an error for the caller.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_jsonable(v) for v in sorted(value, key=str)]
    if isinstance(value, datetime):
        return _iso(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, PurePath):
        return str(value)
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_jsonable(value), allow_nan=False)


def _json_field(name: str, value: Any) -> Any:
    """`value` as it will be stored, or a SpecError naming the field before anything is written."""
    if value is None:
        return {}
    try:
        return json.loads(_dumps(value))
    except (TypeError, ValueError) as exc:
        raise SpecError(name, f"cannot be stored as JSON ({exc})", "pass plain dicts, lists, strings and numbers") from None


def resolve_url(explicit: str | None, state_dir: str | Path | None = None) -> str:
    """The records database to use: `explicit` (the CLI's --records) first, then the environment
    variable LLM_RELEASE_RECORDS_URL, else the local stack's SQLite file
    `<state_dir>/records/releases.db` (state_dir defaulting as for `llm-release stack`)."""
    if explicit:
        return explicit
    if os.environ.get(RECORDS_URL_VAR):
        return os.environ[RECORDS_URL_VAR]
    if state_dir is None:
        from llm_release.stack.local import default_state_dir

        state_dir = default_state_dir()
    return ReleaseRecords.sqlite_url(Path(state_dir) / "records" / "releases.db")


# -- the store ---------------------------------------------------------------------------------
class ReleaseRecords:
    """Reads and writes release records in SQLite or PostgreSQL through SQLAlchemy.

    Safe to share between threads; every process opens its own. Every method is one transaction,
    so a record is never half written, and every failure to reach the database is a RecordsError.
    """

    def __init__(self, url: str, *, migrate: bool = True):
        """Open the records at `url`: "sqlite:////abs/path/releases.db" or
        "postgresql+psycopg://user@host:port/db".

        With `migrate` (the default) the schema is brought to the newest revision first, so the
        first use of a new database creates it; that is idempotent and safe when several
        processes start at once.
        """
        self.url = str(url)
        try:
            parsed = sa.make_url(self.url)
        except sa_exc.ArgumentError:
            raise SpecError("records URL", "is not a database URL",
                            "give sqlite:////abs/path/releases.db or postgresql+psycopg://user@host:port/db") from None
        if parsed.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2; we ship psycopg 3
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.masked_url = parsed.render_as_string(hide_password=True)
        self._password = parsed.password
        self.backend = parsed.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise SpecError("records URL", f"{self.masked_url}: {self.backend} is not supported",
                            "use sqlite:////abs/path/releases.db or postgresql+psycopg://user@host:port/db")
        options: dict[str, Any] = {"json_serializer": _dumps}
        if self.backend == "sqlite":
            if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        else:
            options["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
            options["pool_pre_ping"] = True  # a server restart must not fail the next call
        try:
            engine = sa.create_engine(parsed, **options)
        except ImportError as exc:
            raise RecordsError(f"release records at {self.masked_url} need a driver that is not installed ({exc}): "
                               "pip install 'llm-release[postgres]'", permanent=True) from None
        self._engine = engine
        if self.backend == "sqlite":
            _sqlite_setup(engine)
            # Writes start with BEGIN IMMEDIATE: SQLite takes the write lock at the start of the
            # transaction, waiting up to the busy timeout, instead of failing at once with
            # "database is locked" when a read transaction tries to become a write one.
            self._write_engine = engine.execution_options(sqlite_begin="IMMEDIATE")
            self._read_engine = engine
        else:
            self._write_engine = engine
            # A record and its events read in one snapshot, never a transition without its event.
            self._read_engine = engine.execution_options(isolation_level="REPEATABLE READ")
        if migrate:
            self.upgrade()

    @staticmethod
    def sqlite_url(path: str | Path) -> str:
        """The SQLAlchemy URL of a SQLite file (made absolute)."""
        return f"sqlite:///{Path(path).expanduser().resolve()}"

    def __repr__(self) -> str:
        return f"ReleaseRecords({self.masked_url!r})"

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> ReleaseRecords:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------
    def _failure(self, exc: sa_exc.DBAPIError) -> RecordsError:
        """A RecordsError naming the database (password masked) and the driver's complaint."""
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc).splitlines()[0]
        if self._password:
            detail = detail.replace(self._password, "***")
        missing = "no such table" in detail or ("relation" in detail and "does not exist" in detail)
        if missing:
            return RecordsError(f"release records at {self.masked_url}: {detail}; the schema is not there: "
                                "open them with migrate=True (the default) or call upgrade()", permanent=True)
        if isinstance(exc, (sa_exc.ProgrammingError, sa_exc.DataError)):  # refused values: retrying cannot help
            return RecordsError(f"release records at {self.masked_url}: {detail}", permanent=True)
        return RecordsError(f"release records at {self.masked_url} unavailable: {detail}")

    @contextlib.contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sa.Connection]:
        engine = self._write_engine if write else self._read_engine
        try:
            with engine.begin() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.ProgrammingError, sa_exc.DataError) as exc:
            raise self._failure(exc) from None

    @contextlib.contextmanager
    def migration_connection(self) -> Iterator[sa.Connection]:
        """A connection for Alembic's env.py, set up like every write (pragmas, BEGIN IMMEDIATE)."""
        try:
            with self._write_engine.connect() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise self._failure(exc) from None

    def alembic_config(self):
        """Alembic's configuration built in code: no alembic.ini is needed at run time."""
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        # ConfigParser would read "%" in a password as interpolation; the URL is only for the
        # `alembic` command line anyway, upgrade() passes a connection.
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return config

    def upgrade(self) -> None:
        """Bring the schema to the newest revision (Alembic `upgrade head`); a no-op when it is.

        At head already (every open but the first), only the version is read: no lock is taken
        and Alembic logs nothing.
        """
        from alembic import command

        if self.current_revision() == self.head_revision():
            return
        config = self.alembic_config()
        with self.migration_connection() as conn:
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, "head")
            except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
                raise self._failure(exc) from None

    def current_revision(self) -> str | None:
        """The schema revision the database is at (None before the first upgrade).

        Read with plain SQL, as Alembic's `current` would: every open checks it, and Alembic's
        MigrationContext would log its set-up each time.
        """
        with self._transaction(write=False) as conn:
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return None
            versions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if len(versions) > 1:
            raise RecordsError(f"release records at {self.masked_url} are at several revisions {versions}: "
                               "a branched schema this code never creates", permanent=True)
        return versions[0] if versions else None

    def head_revision(self) -> str | None:
        """The newest revision this code ships."""
        return _head_revision()

    def _insert_event(self, conn: sa.Connection, release_id: int, at: datetime, kind: str, message: str, *,
                      from_state: str | None = None, to_state: str | None = None, actor: str | None = None,
                      data: dict | None = None) -> ReleaseEvent:
        values = {"release_id": release_id, "at": at, "kind": kind, "from_state": from_state, "to_state": to_state,
                  "message": message, "actor": actor, "data": data or {}}
        event_id = conn.execute(sa.insert(release_events).values(**values)).inserted_primary_key[0]
        return ReleaseEvent(id=event_id, **values)

    def _load(self, conn: sa.Connection, rows) -> list[ReleaseRecord]:
        """Records from `releases` rows, each with its events, in the order of `rows`."""
        rows = list(rows)
        if not rows:
            return []
        ids = [row.id for row in rows]
        events: dict[int, list[ReleaseEvent]] = {i: [] for i in ids}
        query = sa.select(release_events).where(release_events.c.release_id.in_(ids)).order_by(release_events.c.id)
        for ev in conn.execute(query):
            events[ev.release_id].append(ReleaseEvent(
                id=ev.id, release_id=ev.release_id, at=ev.at, kind=ev.kind, from_state=ev.from_state,
                to_state=ev.to_state, message=ev.message, actor=ev.actor, data=ev.data or {}))
        return [ReleaseRecord(
            id=row.id, model=row.model, version=row.version, environment=row.environment, region=row.region,
            strategy=row.strategy, artifact_digest=row.artifact_digest, baseline_version=row.baseline_version,
            state=row.state, outcome=row.outcome, reason=row.reason, requested_by=row.requested_by,
            dag_id=row.dag_id, run_id=row.run_id, spec=row.spec or {}, context=row.context or {},
            created_at=row.created_at, updated_at=row.updated_at, finished_at=row.finished_at,
            events=tuple(events[row.id])) for row in rows]

    def _select(self, *where, limit: int | None = None, newest_first: bool = True) -> list[ReleaseRecord]:
        query = sa.select(releases).where(*where)
        query = query.order_by(releases.c.id.desc() if newest_first else releases.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._transaction(write=False) as conn:
            return self._load(conn, conn.execute(query))

    def _locked_release(self, conn: sa.Connection, release_id: int):
        """The release's row, locked until the transaction ends (PostgreSQL; on SQLite the
        transaction's BEGIN IMMEDIATE already excludes every other writer)."""
        row = conn.execute(sa.select(releases.c.state, releases.c.outcome, releases.c.finished_at)
                           .where(releases.c.id == release_id).with_for_update()).first()
        if row is None:
            raise UnknownRelease(release_id, f"the release records at {self.masked_url}")
        return row

    # -- releases ----------------------------------------------------------------------------------
    def create_release(self, *, model: str, version: int, environment: str, region: str, strategy: str,
                       spec: dict, artifact_digest: str | None = None, baseline_version: int | None = None,
                       requested_by: str | None = None, dag_id: str | None = None, run_id: str | None = None,
                       state: str = "pending", context: dict | None = None) -> ReleaseRecord:
        """Record a new release in `state` with its first event, kind "created".

        Airflow tasks pass their dag_id and run_id so a retry can find this release again
        (`find_run`) instead of recording a second one.
        """
        for name, value in (("model", model), ("environment", environment), ("region", region),
                            ("strategy", strategy), ("state", state)):
            if not isinstance(value, str) or not value:
                raise SpecError(name, "must be a non-empty string")
        if isinstance(version, bool) or not isinstance(version, int):
            raise SpecError("version", f"{version!r} is not an integer")
        spec = _json_field("spec", spec)
        context = _json_field("context", context)
        now = _now()
        values = {"model": model, "version": version, "environment": environment, "region": region,
                  "strategy": strategy, "artifact_digest": artifact_digest, "baseline_version": baseline_version,
                  "state": state, "requested_by": requested_by, "dag_id": dag_id, "run_id": run_id, "spec": spec,
                  "context": context, "created_at": now, "updated_at": now}
        with self._transaction() as conn:
            release_id = conn.execute(sa.insert(releases).values(**values)).inserted_primary_key[0]
            against = f" against v{baseline_version}" if baseline_version is not None else ""
            self._insert_event(conn, release_id, now, "created",
                               f"{model} v{version}{against} to {environment}/{region} ({strategy})",
                               to_state=state, actor=requested_by,
                               data={"artifact_digest": artifact_digest, "dag_id": dag_id, "run_id": run_id})
        return self.get(release_id)

    def get(self, release_id: int) -> ReleaseRecord:
        """The release with its events; UnknownRelease when there is none."""
        found = self._select(releases.c.id == release_id)
        if not found:
            raise UnknownRelease(release_id, f"the release records at {self.masked_url}")
        return found[0]

    def find_run(self, *, dag_id: str, run_id: str) -> ReleaseRecord | None:
        """The release an Airflow DAG run created (the newest, should it have created several),
        so a retried first task picks it up instead of recording a second release."""
        found = self._select(releases.c.dag_id == dag_id, releases.c.run_id == run_id, limit=1)
        return found[0] if found else None

    def transition(self, release_id: int, *, expected: str | tuple[str, ...], to: str, message: str,
                   actor: str | None = None, data: dict | None = None, context: dict | None = None) -> ReleaseRecord:
        """Move the release from one of the `expected` states to `to`, with its "transition" event.

        Compare-and-set: two tasks (or a task and its retry) that both think they are next cannot
        both move the release; the loser gets StateConflict naming the actual state, and nothing
        of its call is written. The state, the event and `context` (which, when given, replaces
        the stored context: what a retried task needs to resume) commit together or not at all.
        """
        expected_states = (expected,) if isinstance(expected, str) else tuple(expected)
        if not expected_states:
            raise SpecError("expected", "names no state", "give the state (or states) the release must be in")
        data = _json_field("data", data)
        values: dict[str, Any] = {"state": to, "updated_at": _now()}
        if context is not None:
            values["context"] = _json_field("context", context)
        with self._transaction() as conn:
            current = self._locked_release(conn, release_id)
            if current.state not in expected_states:
                raise StateConflict(release_id, expected_states, current.state)
            # The conditional UPDATE is the compare-and-set itself; the row lock above only lets
            # the event name the state it came from.
            moved = conn.execute(sa.update(releases)
                                 .where(releases.c.id == release_id, releases.c.state.in_(expected_states))
                                 .values(**values)).rowcount
            if moved != 1:
                raise StateConflict(release_id, expected_states, current.state)
            self._insert_event(conn, release_id, values["updated_at"], "transition", message,
                               from_state=current.state, to_state=to, actor=actor, data=data)
        return self.get(release_id)

    def add_event(self, release_id: int, kind: str, message: str, *, data: dict | None = None,
                  actor: str | None = None) -> ReleaseEvent:
        """Append to the release's timeline without changing its state: a traffic step with its
        weights ("step"), a verdict with its numbers ("verdict"), who approved ("approval"),
        "rollback", "note", "lease"."""
        if not kind:
            raise SpecError("kind", "must be a non-empty string")
        data = _json_field("data", data)
        now = _now()
        with self._transaction() as conn:
            touched = conn.execute(sa.update(releases).where(releases.c.id == release_id)
                                   .values(updated_at=now)).rowcount
            if not touched:
                raise UnknownRelease(release_id, f"the release records at {self.masked_url}")
            return self._insert_event(conn, release_id, now, kind, message, actor=actor, data=data)

    def finish(self, release_id: int, *, state: str, outcome: str, reason: str, actor: str | None = None,
               data: dict | None = None) -> ReleaseRecord:
        """End the release: its final state, outcome (promoted, passed, rolled_back, failed,
        refused) and why, with a "finished" event.

        Finishing again with the same state and outcome returns the record unchanged (a retried
        task that finished before it crashed); a different ending of a finished release is a
        StateConflict: a release ends once.
        """
        if outcome not in OUTCOMES:
            raise SpecError("outcome", f"{outcome!r} is not one of {', '.join(OUTCOMES)}")
        data = _json_field("data", data)
        now = _now()
        with self._transaction() as conn:
            current = self._locked_release(conn, release_id)
            if current.finished_at is not None:
                if (current.state, current.outcome) != (state, outcome):
                    raise StateConflict(release_id, ("unfinished",), current.state, (
                        f"release {release_id} already finished as {current.outcome} (state {current.state!r}); "
                        f"it cannot also end as {outcome} (state {state!r})"))
            else:
                conn.execute(sa.update(releases).where(releases.c.id == release_id).values(
                    state=state, outcome=outcome, reason=reason, finished_at=now, updated_at=now))
                self._insert_event(conn, release_id, now, "finished", f"{outcome}: {reason}",
                                   from_state=current.state, to_state=state, actor=actor,
                                   data={**data, "outcome": outcome})
        return self.get(release_id)

    def history(self, model: str, *, environment: str | None = None, limit: int = 20) -> list[ReleaseRecord]:
        """The model's newest `limit` releases (in one environment, or all), newest first, with events."""
        if limit < 1:
            raise SpecError("limit", f"{limit} is not a positive number of releases")
        where = [releases.c.model == model]
        if environment is not None:
            where.append(releases.c.environment == environment)
        return self._select(*where, limit=limit)

    def passed(self, *, model: str, artifact_digest: str, environment: str) -> ReleaseRecord | None:
        """The newest release of exactly these bytes in `environment` that ended promoted or passed.

        What a promotion to the next environment asks: did this artifact pass there before?
        Another digest, another environment, or a release still running, rolled back or failed
        does not count.
        """
        found = self._select(releases.c.model == model, releases.c.artifact_digest == artifact_digest,
                             releases.c.environment == environment, releases.c.outcome.in_(PASSING_OUTCOMES),
                             limit=1)
        return found[0] if found else None

    def active(self, *, model: str, environment: str) -> list[ReleaseRecord]:
        """Releases of the model in the environment that have not finished, oldest first."""
        return self._select(releases.c.model == model, releases.c.environment == environment,
                            releases.c.finished_at.is_(None), newest_first=False)

    # -- leases --------------------------------------------------------------------------------------
    @staticmethod
    def _lease(row) -> Lease:
        return Lease(model=row.model, environment=row.environment, holder=row.holder, release_id=row.release_id,
                     acquired_at=row.acquired_at, expires_at=row.expires_at)

    @staticmethod
    def _check_lease_args(holder: str, ttl_s: float) -> None:
        if not holder:
            raise SpecError("holder", "must name who holds the lease", "e.g. dag_id/run_id")
        if not (isinstance(ttl_s, (int, float)) and math.isfinite(ttl_s) and ttl_s > 0):
            raise SpecError("ttl_s", f"{ttl_s!r} is not a positive number of seconds")

    def _lease_row(self, conn: sa.Connection, model: str, environment: str):
        # FOR UPDATE (PostgreSQL) locks an existing lease until this transaction ends, so a
        # concurrent renewal or takeover waits and then sees the committed result.
        return conn.execute(sa.select(release_leases)
                            .where(release_leases.c.model == model, release_leases.c.environment == environment)
                            .with_for_update()).first()

    def acquire_lease(self, *, model: str, environment: str, holder: str, release_id: int | None,
                      ttl_s: float) -> Lease:
        """Take the lease of `model` in `environment` for `ttl_s` seconds: one release at a time.

        Free: taken. Held by `holder`: renewed. Expired: taken over, with a "lease" event on the
        new holder's release and on the old one's, saying who took it from whom and how long it
        had been expired. Held by someone else and not expired: LeaseHeld.

        Race safety, on both databases exactly one of several concurrent callers wins:
        - SQLite: the transaction starts with BEGIN IMMEDIATE, so lease transactions run one
          after the other and each sees the previous one's result.
        - PostgreSQL: an existing row is read with SELECT ... FOR UPDATE, so a concurrent
          takeover or renewal waits for ours and then sees our row. A missing row cannot be
          locked; two inserts then meet at the primary key (model, environment): the second
          blocks until the first commits and fails with IntegrityError, and the retry reads the
          winner's row and raises LeaseHeld.
        """
        self._check_lease_args(holder, ttl_s)
        for _ in range(LEASE_ATTEMPTS):
            try:
                return self._acquire(model, environment, holder, release_id, ttl_s)
            except sa_exc.IntegrityError:
                continue
        raise RecordsError(f"could not take the lease of {model} in {environment} after {LEASE_ATTEMPTS} attempts")

    def _acquire(self, model: str, environment: str, holder: str, release_id: int | None, ttl_s: float) -> Lease:
        with self._transaction() as conn:
            if release_id is not None:
                self._locked_release(conn, release_id)  # exists (UnknownRelease otherwise)
            now = _now()
            expires_at = now + timedelta(seconds=ttl_s)
            row = self._lease_row(conn, model, environment)
            if row is None:
                lease = Lease(model, environment, holder, release_id, now, expires_at)
                conn.execute(sa.insert(release_leases).values(
                    model=model, environment=environment, holder=holder, release_id=release_id,
                    acquired_at=now, expires_at=expires_at))
                return lease
            where = (release_leases.c.model == model, release_leases.c.environment == environment)
            if row.holder == holder:
                kept_release = release_id if release_id is not None else row.release_id
                conn.execute(sa.update(release_leases).where(*where).values(expires_at=expires_at,
                                                                            release_id=kept_release))
                return Lease(model, environment, holder, kept_release, row.acquired_at, expires_at)
            if row.expires_at > now:
                raise LeaseHeld(model, environment, row.holder, row.release_id, row.expires_at)
            conn.execute(sa.update(release_leases).where(*where).values(
                holder=holder, release_id=release_id, acquired_at=now, expires_at=expires_at))
            expired_for_s = (now - row.expires_at).total_seconds()
            message = (f"lease of {model} in {environment} taken over by {holder} from {row.holder}, "
                       f"whose lease had expired {expired_for_s:.1f} s before")
            data = {"model": model, "environment": environment, "from_holder": row.holder, "to_holder": holder,
                    "from_release_id": row.release_id, "to_release_id": release_id,
                    "expired_at": _iso(row.expires_at), "expired_for_s": round(expired_for_s, 3)}
            for affected in dict.fromkeys(r for r in (release_id, row.release_id) if r is not None):
                conn.execute(sa.update(releases).where(releases.c.id == affected).values(updated_at=now))
                self._insert_event(conn, affected, now, "lease", message, actor=holder, data=data)
            return Lease(model, environment, holder, release_id, now, expires_at)

    def renew_lease(self, *, model: str, environment: str, holder: str, ttl_s: float) -> Lease:
        """Extend `holder`'s lease to `ttl_s` seconds from now (a heartbeat during a long step).

        LeaseHeld when someone else holds it now (it expired and was taken over). A lease that
        expired without being taken over is simply extended; one that is gone is taken again.
        """
        self._check_lease_args(holder, ttl_s)
        for _ in range(LEASE_ATTEMPTS):
            try:
                with self._transaction() as conn:
                    now = _now()
                    expires_at = now + timedelta(seconds=ttl_s)
                    row = self._lease_row(conn, model, environment)
                    if row is None:
                        conn.execute(sa.insert(release_leases).values(
                            model=model, environment=environment, holder=holder, release_id=None,
                            acquired_at=now, expires_at=expires_at))
                        return Lease(model, environment, holder, None, now, expires_at)
                    if row.holder != holder:
                        raise LeaseHeld(model, environment, row.holder, row.release_id, row.expires_at)
                    conn.execute(sa.update(release_leases).where(
                        release_leases.c.model == model, release_leases.c.environment == environment,
                        release_leases.c.holder == holder).values(expires_at=expires_at))
                    return Lease(model, environment, holder, row.release_id, row.acquired_at, expires_at)
            except sa_exc.IntegrityError:
                continue
        raise RecordsError(f"could not renew the lease of {model} in {environment} after {LEASE_ATTEMPTS} attempts")

    def release_lease(self, *, model: str, environment: str, holder: str) -> bool:
        """Give the lease up, only if `holder` holds it; True when one was released."""
        with self._transaction() as conn:
            return conn.execute(sa.delete(release_leases).where(
                release_leases.c.model == model, release_leases.c.environment == environment,
                release_leases.c.holder == holder)).rowcount > 0

    def lease(self, *, model: str, environment: str) -> Lease | None:
        """The lease as stored (possibly expired: see Lease.expired), or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(sa.select(release_leases).where(
                release_leases.c.model == model, release_leases.c.environment == environment)).first()
        return self._lease(row) if row else None


@functools.lru_cache(maxsize=1)
def _head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def _sqlite_setup(engine: sa.Engine) -> None:
    """Pragmas on every new SQLite connection, and SQLAlchemy (not the driver) emitting BEGIN."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # The driver's own transaction handling would not BEGIN before SELECTs or DDL and could
        # not say BEGIN IMMEDIATE; SQLAlchemy emits BEGIN itself below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            # WAL: readers never block the writer and the writer never blocks readers, so
            # concurrent Airflow workers reading records do not see "database is locked".
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
