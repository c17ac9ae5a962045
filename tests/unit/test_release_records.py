"""Release records on SQLite and on a real PostgreSQL server: every test runs on both.

What the release state machine relies on: a record and its timeline round-trip intact, a
transition is a compare-and-set that writes nothing when it loses, a lease admits exactly one
release per model and environment even when several processes ask at once, and the schema is
created by Alembic exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta, timezone

import pytest
import sqlalchemy as sa

from llm_release.errors import SpecError
from llm_release.records import (
    Lease,
    LeaseHeld,
    RecordsError,
    ReleaseRecords,
    StateConflict,
    UnknownRelease,
    resolve_url,
)
from llm_release.records.schema import VERSION_TABLE, metadata
from llm_release.stack.processes import free_port
from tests.fixtures.postgres import create_database

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
TABLES = {"releases", "release_events", "release_leases", VERSION_TABLE}


@pytest.fixture(params=["sqlite", "postgresql"])
def records_url(request, tmp_path):
    """A new, empty database: a SQLite file, or a database of its own on the test server."""
    if request.param == "sqlite":
        return ReleaseRecords.sqlite_url(tmp_path / "records" / "releases.db")
    return create_database(request.getfixturevalue("postgres_url"))


@pytest.fixture()
def records(records_url):
    opened = ReleaseRecords(records_url)
    try:
        yield opened
    finally:
        opened.close()


def new_release(records, **overrides):
    values = {"model": "llama", "version": 2, "environment": "prod", "region": "us-east-1", "strategy": "canary",
              "spec": {"steps": [10, 50, 100]}, "artifact_digest": "sha256:" + "a" * 64, "baseline_version": 1,
              "requested_by": "alice", "dag_id": "release_canary", "run_id": "manual__1"}
    return records.create_release(**{**values, **overrides})


def table_counts(url):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                    for t in ("releases", "release_events", "release_leases")}
    finally:
        engine.dispose()


# -- records and their timeline ------------------------------------------------------------------
def test_create_get_and_history_round_trip_with_events_in_order_and_json_intact(records):
    verdict = {"outcome": "PASS", "p99_ms": {"candidate": 812.5, "baseline": 790.25}, "errors": [0, 1, None],
               "checks": {"ttft": True, "note": "naïve ✓"}, "ratio": float("nan")}
    first = new_release(records, context={"resume": {"step": 0}})
    records.transition(first.id, expected="pending", to="canary", message="canary at 10%", actor="airflow",
                       data={"weights": {"1": 90, "2": 10}})
    records.add_event(first.id, "step", "shifted to 50%", data={"weights": {"1": 50, "2": 50}})
    records.add_event(first.id, "verdict", "PASS", data=verdict)
    records.add_event(first.id, "approval", "approved", actor="bob", data={"answered_by": "bob"})
    staging = new_release(records, environment="staging", run_id="manual__2")
    other = new_release(records, model="mistral", run_id="manual__3")

    got = records.get(first.id)
    assert (got.model, got.version, got.environment, got.region, got.strategy) == ("llama", 2, "prod", "us-east-1", "canary")
    assert got.artifact_digest == "sha256:" + "a" * 64 and got.baseline_version == 1 and got.requested_by == "alice"
    assert got.spec == {"steps": [10, 50, 100]} and got.context == {"resume": {"step": 0}}
    assert got.state == "canary" and got.outcome is None and got.finished_at is None
    assert [e.kind for e in got.events] == ["created", "transition", "step", "verdict", "approval"]
    assert (got.events[1].from_state, got.events[1].to_state, got.events[1].actor) == ("pending", "canary", "airflow")
    assert got.events[1].data == {"weights": {"1": 90, "2": 10}}
    # NaN cannot be stored as a JSON number (PostgreSQL's json refuses it): kept as a string.
    assert got.events[3].data == {**verdict, "ratio": "nan"}
    assert got.events[4].actor == "bob"
    times = [e.at for e in got.events]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in [*times, got.created_at, got.updated_at])
    assert times == sorted(times) and got.updated_at >= times[-1]

    assert [r.id for r in records.history("llama")] == [staging.id, first.id]
    assert [r.id for r in records.history("llama", environment="prod")] == [first.id]
    assert [r.id for r in records.history("llama", limit=1)] == [staging.id]
    assert [r.id for r in records.history("mistral")] == [other.id]
    assert records.history("llama")[1].events == got.events
    assert records.history("nothing") == []

    doc = json.loads(json.dumps(got.to_dict()))
    assert doc["created_at"].endswith("Z") and doc["events"][3]["data"]["checks"]["note"] == "naïve ✓"
    assert [e["kind"] for e in doc["events"]] == ["created", "transition", "step", "verdict", "approval"]


def test_data_that_is_not_json_is_refused_before_anything_is_written(records, records_url):
    release = new_release(records)
    before = table_counts(records_url)
    with pytest.raises(SpecError, match="data"):
        records.add_event(release.id, "note", "x", data={"obj": object()})
    with pytest.raises(SpecError, match="data"):
        records.transition(release.id, expected="pending", to="canary", message="x", data={"obj": object()})
    assert table_counts(records_url) == before
    assert records.get(release.id).state == "pending"


def test_transition_is_a_compare_and_set_that_writes_nothing_when_it_loses(records, records_url):
    release = new_release(records, context={"a": 1})
    moved = records.transition(release.id, expected=("pending", "paused"), to="canary", message="go",
                               context={"a": 2, "step": 1})
    assert moved.state == "canary" and moved.context == {"a": 2, "step": 1}
    before = table_counts(records_url)

    with pytest.raises(StateConflict) as raised:
        records.transition(release.id, expected="pending", to="promoting", message="late retry", context={"a": 3})
    err = raised.value
    assert (err.release_id, err.expected, err.actual, err.permanent) == (release.id, ("pending",), "canary", True)
    assert "'canary'" in str(err)
    after = records.get(release.id)
    assert after.state == "canary" and after.context == {"a": 2, "step": 1}
    assert table_counts(records_url) == before
    assert [e.kind for e in after.events] == ["created", "transition"]


def test_concurrent_transitions_from_the_same_state_have_exactly_one_winner(records, records_url):
    release = new_release(records)
    openers = [ReleaseRecords(records_url, migrate=False) for _ in range(6)]
    barrier = threading.Barrier(len(openers))
    results = []

    def attempt(i, mine):
        barrier.wait()
        try:
            mine.transition(release.id, expected="pending", to=f"canary-{i}", message=f"worker {i}")
            results.append("won")
        except StateConflict as exc:
            results.append(exc.actual)

    threads = [threading.Thread(target=attempt, args=(i, r)) for i, r in enumerate(openers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in openers:
        r.close()
    assert results.count("won") == 1, results
    final = records.get(release.id)
    assert all(r in ("won", final.state) for r in results)
    assert [e.kind for e in final.events] == ["created", "transition"]


def test_finish_records_outcome_and_ends_the_release_once(records):
    release = new_release(records)
    records.transition(release.id, expected="pending", to="canary", message="go")
    done = records.finish(release.id, state="rolled_back", outcome="rolled_back", reason="p99 over budget",
                          actor="judge", data={"p99_ms": 1200})
    assert (done.state, done.outcome, done.reason) == ("rolled_back", "rolled_back", "p99 over budget")
    assert done.finished_at is not None and done.finished_at >= done.created_at and done.duration_s >= 0
    last = done.events[-1]
    assert (last.kind, last.from_state, last.to_state, last.actor) == ("finished", "canary", "rolled_back", "judge")
    assert last.data == {"p99_ms": 1200, "outcome": "rolled_back"}
    assert records.active(model="llama", environment="prod") == []

    again = records.finish(release.id, state="rolled_back", outcome="rolled_back", reason="retry")
    assert again.reason == "p99 over budget" and len(again.events) == len(done.events)
    with pytest.raises(StateConflict, match="already finished as rolled_back"):
        records.finish(release.id, state="promoted", outcome="promoted", reason="no")
    with pytest.raises(SpecError, match="outcome"):
        records.finish(new_release(records).id, state="x", outcome="fine", reason="no")


def test_active_lists_only_unfinished_releases_of_that_model_and_environment(records):
    running = new_release(records)
    finished = new_release(records, run_id="manual__2")
    records.finish(finished.id, state="failed", outcome="failed", reason="build failed")
    new_release(records, environment="staging", run_id="manual__3")
    assert [r.id for r in records.active(model="llama", environment="prod")] == [running.id]


def test_passed_counts_only_promoted_or_passed_releases_of_that_digest_and_environment(records):
    digest, other_digest = "sha256:" + "a" * 64, "sha256:" + "b" * 64

    def ended(outcome, **overrides):
        release = new_release(records, **overrides)
        return records.finish(release.id, state=outcome, outcome=outcome, reason=outcome)

    ended("failed", artifact_digest=digest, environment="staging")
    ended("rolled_back", artifact_digest=digest, environment="staging")
    ended("refused", artifact_digest=digest, environment="staging")
    new_release(records, artifact_digest=digest, environment="staging")  # still running
    ended("passed", artifact_digest=other_digest, environment="staging")
    ended("passed", artifact_digest=digest, environment="dev")
    ended("passed", artifact_digest=digest, environment="staging", model="mistral")
    assert records.passed(model="llama", artifact_digest=digest, environment="staging") is None

    passed = ended("passed", artifact_digest=digest, environment="staging")
    assert records.passed(model="llama", artifact_digest=digest, environment="staging").id == passed.id
    promoted = ended("promoted", artifact_digest=digest, environment="staging")
    assert records.passed(model="llama", artifact_digest=digest, environment="staging").id == promoted.id
    ended("failed", artifact_digest=digest, environment="staging")
    assert records.passed(model="llama", artifact_digest=digest, environment="staging").id == promoted.id


def test_find_run_returns_the_release_an_airflow_run_created(records):
    mine = new_release(records, dag_id="release_canary", run_id="manual__2026-11-30T10:00:00+00:00")
    new_release(records, dag_id="release_canary", run_id="manual__other")
    new_release(records, dag_id="release_blue_green", run_id="manual__2026-11-30T10:00:00+00:00")
    found = records.find_run(dag_id="release_canary", run_id="manual__2026-11-30T10:00:00+00:00")
    assert found is not None and found.id == mine.id and found.events[0].kind == "created"
    assert records.find_run(dag_id="release_canary", run_id="scheduled__x") is None


def test_unknown_release_is_permanent_and_writes_nothing(records, records_url):
    new_release(records)
    before = table_counts(records_url)
    for call in (lambda: records.get(999), lambda: records.add_event(999, "note", "x"),
                 lambda: records.transition(999, expected="pending", to="canary", message="x"),
                 lambda: records.finish(999, state="failed", outcome="failed", reason="x"),
                 lambda: records.acquire_lease(model="llama", environment="prod", holder="h", release_id=999, ttl_s=60)):
        with pytest.raises(UnknownRelease) as raised:
            call()
        assert raised.value.permanent and raised.value.release_id == 999
    assert table_counts(records_url) == before


# -- leases ------------------------------------------------------------------------------------------
def test_a_second_holder_is_refused_with_the_holder_named_and_the_same_holder_renews(records):
    release = new_release(records)
    holder = "release_canary/manual__2026-11-30T10:00:00+00:00"
    lease = records.acquire_lease(model="llama", environment="prod", holder=holder, release_id=release.id, ttl_s=600)
    assert isinstance(lease, Lease) and lease.holder == holder and lease.release_id == release.id
    assert lease.expires_at - lease.acquired_at == timedelta(seconds=600)

    with pytest.raises(LeaseHeld) as raised:
        records.acquire_lease(model="llama", environment="prod", holder="release_canary/manual__other",
                              release_id=None, ttl_s=600)
    err = raised.value
    assert (err.model, err.environment, err.holder, err.release_id) == ("llama", "prod", holder, release.id)
    assert err.expires_at == lease.expires_at and not err.permanent
    assert holder in str(err) and lease.expires_at.strftime("%Y-%m-%dT%H:%M") in str(err)

    # Other environments and models are independent.
    records.acquire_lease(model="llama", environment="staging", holder="x", release_id=None, ttl_s=60)
    records.acquire_lease(model="mistral", environment="prod", holder="x", release_id=None, ttl_s=60)

    time.sleep(0.01)
    renewed = records.acquire_lease(model="llama", environment="prod", holder=holder, release_id=release.id, ttl_s=900)
    assert renewed.acquired_at == lease.acquired_at and renewed.expires_at > lease.expires_at
    heartbeat = records.renew_lease(model="llama", environment="prod", holder=holder, ttl_s=1200)
    assert heartbeat.expires_at > renewed.expires_at and heartbeat.release_id == release.id
    assert records.lease(model="llama", environment="prod") == heartbeat
    assert [e.kind for e in records.get(release.id).events] == ["created"]


def test_an_expired_lease_is_taken_over_and_the_takeover_recorded_on_both_releases(records):
    old = new_release(records, run_id="manual__old")
    new = new_release(records, run_id="manual__new")
    records.acquire_lease(model="llama", environment="prod", holder="release_canary/manual__old",
                          release_id=old.id, ttl_s=0.2)
    with pytest.raises(LeaseHeld):
        records.acquire_lease(model="llama", environment="prod", holder="release_canary/manual__new",
                              release_id=new.id, ttl_s=60)
    time.sleep(0.5)
    taken = records.acquire_lease(model="llama", environment="prod", holder="release_canary/manual__new",
                                  release_id=new.id, ttl_s=60)
    assert (taken.holder, taken.release_id) == ("release_canary/manual__new", new.id)
    assert records.lease(model="llama", environment="prod") == taken

    for release in (old, new):
        lease_events = [e for e in records.get(release.id).events if e.kind == "lease"]
        assert len(lease_events) == 1
        event = lease_events[0]
        assert "release_canary/manual__old" in event.message and "release_canary/manual__new" in event.message
        assert event.data["from_holder"] == "release_canary/manual__old"
        assert event.data["to_holder"] == "release_canary/manual__new"
        assert (event.data["from_release_id"], event.data["to_release_id"]) == (old.id, new.id)
        assert 0.25 <= event.data["expired_for_s"] < 30

    # The old holder's heartbeat now fails, naming who has it.
    with pytest.raises(LeaseHeld, match="manual__new"):
        records.renew_lease(model="llama", environment="prod", holder="release_canary/manual__old", ttl_s=60)


def test_only_the_holder_releases_a_lease(records):
    records.acquire_lease(model="llama", environment="prod", holder="a", release_id=None, ttl_s=60)
    assert records.release_lease(model="llama", environment="prod", holder="b") is False
    assert records.lease(model="llama", environment="prod").holder == "a"
    assert records.release_lease(model="llama", environment="prod", holder="a") is True
    assert records.lease(model="llama", environment="prod") is None
    assert records.release_lease(model="llama", environment="prod", holder="a") is False
    assert records.acquire_lease(model="llama", environment="prod", holder="b", release_id=None, ttl_s=60).holder == "b"


def test_bad_lease_arguments_are_refused(records):
    with pytest.raises(SpecError, match="ttl_s"):
        records.acquire_lease(model="llama", environment="prod", holder="a", release_id=None, ttl_s=0)
    with pytest.raises(SpecError, match="holder"):
        records.acquire_lease(model="llama", environment="prod", holder="", release_id=None, ttl_s=60)
    assert records.lease(model="llama", environment="prod") is None


def _race(records_url, holders, **kwargs):
    """Every holder (own connection pool each, like separate workers) asks at the same moment."""
    openers = [ReleaseRecords(records_url, migrate=False) for _ in holders]
    barrier = threading.Barrier(len(holders))
    won, refused, other = [], [], []

    def attempt(holder, mine):
        barrier.wait()
        try:
            won.append(mine.acquire_lease(model="llama", environment="prod", holder=holder, ttl_s=60, **kwargs))
        except LeaseHeld as exc:
            refused.append(exc)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            other.append(exc)

    threads = [threading.Thread(target=attempt, args=(h, r)) for h, r in zip(holders, openers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for r in openers:
        r.close()
    assert other == []
    return won, refused


def test_eight_threads_racing_for_a_free_lease_have_exactly_one_winner(records, records_url):
    holders = [f"release_canary/manual__{i}" for i in range(8)]
    won, refused = _race(records_url, holders, release_id=None)
    assert len(won) == 1 and len(refused) == 7
    assert {exc.holder for exc in refused} == {won[0].holder}
    assert records.lease(model="llama", environment="prod").holder == won[0].holder


def test_eight_threads_racing_to_take_over_an_expired_lease_have_exactly_one_winner(records, records_url):
    old = new_release(records, run_id="manual__old")
    records.acquire_lease(model="llama", environment="prod", holder="old", release_id=old.id, ttl_s=0.05)
    time.sleep(0.2)
    won, refused = _race(records_url, [f"release_canary/manual__{i}" for i in range(8)], release_id=None)
    assert len(won) == 1 and len(refused) == 7
    assert {exc.holder for exc in refused} == {won[0].holder}
    takeovers = [e for e in records.get(old.id).events if e.kind == "lease"]
    assert len(takeovers) == 1 and takeovers[0].data["to_holder"] == won[0].holder


RACER = textwrap.dedent("""
    import sys, time
    from llm_release.records import LeaseHeld, ReleaseRecords
    url, holder, migrate_at, race_at = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    time.sleep(max(0.0, migrate_at - time.time()))
    records = ReleaseRecords(url)  # both processes migrate a fresh database at once
    time.sleep(max(0.0, race_at - time.time()))
    try:
        records.acquire_lease(model="llama", environment="prod", holder=holder, release_id=None, ttl_s=60)
        print("won")
    except LeaseHeld as exc:
        print("held by " + exc.holder)
""")


def test_two_processes_starting_on_a_fresh_database_migrate_once_and_one_gets_the_lease(records_url):
    start = time.time() + 3.0  # after both interpreters have imported SQLAlchemy
    procs = [subprocess.Popen([sys.executable, "-c", RACER, records_url, f"worker-{i}", str(start), str(start + 2.0)],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = sorted(out.strip() for out, _ in outs)
    assert lines[1] == "won", outs
    winner = f"worker-{[out.strip() for out, _ in outs].index('won')}"
    assert lines[0] == f"held by {winner}", outs
    with ReleaseRecords(records_url, migrate=False) as records:
        assert records.current_revision() == records.head_revision()


# -- schema and migrations -----------------------------------------------------------------------
def test_upgrade_creates_exactly_the_schema_the_code_uses_and_is_idempotent(records_url):
    records = ReleaseRecords(records_url, migrate=False)
    try:
        assert records.current_revision() is None
        records.upgrade()
        head = records.head_revision()
        assert head == "0001" and records.current_revision() == head
        engine = sa.create_engine(records_url)
        try:
            inspector = sa.inspect(engine)
            assert set(inspector.get_table_names()) == TABLES
            for table in metadata.sorted_tables:
                columns = {c["name"]: c for c in inspector.get_columns(table.name)}
                assert set(columns) == {c.name for c in table.columns}, table.name
                assert {n for n, c in columns.items() if c["nullable"]} == {c.name for c in table.columns if c.nullable}
                lengths = {c.name: getattr(c.type, "length", None) for c in table.columns}
                assert {n: getattr(c["type"], "length", None) for n, c in columns.items()} == lengths, table.name
                pk = inspector.get_pk_constraint(table.name)["constrained_columns"]
                assert pk == [c.name for c in table.primary_key.columns], table.name
            indexes = {i["name"]: i["column_names"] for t in ("releases", "release_events")
                       for i in inspector.get_indexes(t)}
            assert indexes == {"ix_releases_model_environment": ["model", "environment"],
                               "ix_releases_dag_id_run_id": ["dag_id", "run_id"],
                               "ix_release_events_release_id": ["release_id"]}
            fks = {t: [(f["referred_table"], f["constrained_columns"]) for f in inspector.get_foreign_keys(t)]
                   for t in ("release_events", "release_leases")}
            assert fks == {"release_events": [("releases", ["release_id"])],
                           "release_leases": [("releases", ["release_id"])]}

            new_release(records)
            # Alembic itself, not only the shortcut for an up-to-date schema, finds nothing to do.
            from alembic import command

            config = records.alembic_config()
            with records.migration_connection() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            records.upgrade()
            ReleaseRecords(records_url).close()
            assert set(sa.inspect(engine).get_table_names()) == TABLES
            with engine.connect() as conn:
                assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [head]
                from alembic.runtime.migration import MigrationContext

                context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
                assert context.get_current_heads() == (head,)
            assert len(records.history("llama")) == 1
        finally:
            engine.dispose()
    finally:
        records.close()


def test_records_of_a_database_never_upgraded_say_how_to_fix_it(records_url):
    with ReleaseRecords(records_url, migrate=False) as records:
        with pytest.raises(RecordsError, match="upgrade") as raised:
            records.history("llama")
        assert raised.value.permanent


def test_unreachable_postgresql_is_a_transient_records_error_with_the_password_masked():
    url = f"postgresql+psycopg://releaser:s3cret-pass@127.0.0.1:{free_port()}/records"
    with pytest.raises(RecordsError) as raised:
        ReleaseRecords(url)
    message = str(raised.value)
    assert "s3cret-pass" not in message and "releaser:***@127.0.0.1" in message
    assert not raised.value.permanent
    assert raised.value.__cause__ is None and "s3cret" not in repr(raised.value.__context__)


def test_sqlite_uses_wal_foreign_keys_and_waits_for_a_busy_writer(tmp_path):
    url = ReleaseRecords.sqlite_url(tmp_path / "releases.db")
    with ReleaseRecords(url) as records:
        release = new_release(records)
        with records._engine.connect() as conn:  # noqa: SLF001 - the pragmas of a pooled connection
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        # Another writer holds the write lock for a second: the next write waits instead of
        # failing with "database is locked".
        import sqlite3

        other = sqlite3.connect(tmp_path / "releases.db", isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        timer = threading.Timer(1.0, other.execute, args=("COMMIT",))
        timer.start()
        began = time.monotonic()
        records.add_event(release.id, "note", "written after the other writer committed")
        assert time.monotonic() - began >= 0.9
        timer.join()
        other.close()
        assert records.get(release.id).events[-1].kind == "note"


def test_resolve_url_prefers_the_option_then_the_environment_then_the_local_stack(tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_RELEASE_RECORDS_URL", raising=False)
    assert resolve_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/records/releases.db"
    monkeypatch.setenv("LLM_RELEASE_STATE_DIR", str(tmp_path / "stack"))
    assert resolve_url(None, None) == f"sqlite:///{(tmp_path / 'stack').resolve()}/records/releases.db"
    monkeypatch.setenv("LLM_RELEASE_RECORDS_URL", "postgresql+psycopg://u@db:5432/records")
    assert resolve_url(None, tmp_path) == "postgresql+psycopg://u@db:5432/records"
    assert resolve_url("sqlite:////x/y.db", tmp_path) == "sqlite:////x/y.db"


def test_times_are_stored_as_utc_whatever_the_callers_timezone(records):
    release = new_release(records)
    got = records.get(release.id)
    assert got.created_at.tzinfo == timezone.utc and got.events[0].at.tzinfo == timezone.utc
    lease = records.acquire_lease(model="llama", environment="prod", holder="a", release_id=release.id, ttl_s=60)
    stored = records.lease(model="llama", environment="prod")
    assert stored.expires_at == lease.expires_at and stored.expires_at.tzinfo == timezone.utc
