"""The records port's contract, run against every adapter (SQLite and
PostgreSQL): transactions commit or leave nothing, a read-then-write under
concurrency loses no update, what a commit means for durability, migrations
from empty and the refusal of a newer schema, and failure (the database
down: `Busy`, nothing partial)."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from sync.errors import Busy
from sync.records import SchemaTooNew
from sync.records.migrations import latest_version, migrations
from sync.records.postgres import PostgresRecords
from sync.records.rows import (Chunk, CopyRequest, Device, EnrollmentCode, LoginFailures, Manifest, Organisation,
                               Recording, Staff)

from ..support import PROJECT_ROOT
from .spec import increment, open_records


def child(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.contract.spec", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, check=check)


def test_a_transaction_commits_what_it_wrote(records):
    with records.transaction() as unit:
        unit.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ["colour", "green"])
        assert records.one("SELECT value FROM meta WHERE key = ?", ["colour"]) == {"value": "green"}  # same thread
    assert records.query("SELECT key, value FROM meta WHERE key = :key", {"key": "colour"}) == \
        [{"key": "colour", "value": "green"}]


def test_an_exception_rolls_back_every_write_of_the_transaction(records):
    with pytest.raises(ZeroDivisionError):
        with records.transaction() as unit:
            unit.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
            unit.execute("UPDATE organisations SET name = 'renamed' WHERE id = 1")
            1 / 0
    assert records.one("SELECT value FROM meta WHERE key = 'a'") is None
    assert records.one("SELECT name FROM organisations WHERE id = 1")["name"] == "Default organisation"


def test_portable_helpers_and_placeholders(records):
    with records.transaction() as unit:
        first = unit.insert("organisations", {"slug": "one", "name": "One", "created_at": "t"}, returning="id")
        second = unit.insert("organisations", {"slug": "two", "name": "Two", "created_at": "t"}, returning="id")
        unit.upsert("meta", {"key": "k", "value": "before"}, key=["key"])
        unit.upsert("meta", {"key": "k", "value": "after"}, key=["key"])
        changed = unit.execute("UPDATE organisations SET name = name || ' (renamed)' WHERE id > ?", [1]).rowcount
    assert (first, second, changed) == (2, 3, 2)
    assert records.one("SELECT value FROM meta WHERE key = 'k'")["value"] == "after"
    # A literal % (in LIKE and in arithmetic), named and positional
    # placeholders, and an integer sum that stays an integer.
    row = records.one("SELECT COUNT(*) AS n, COALESCE(SUM(id), 0) AS total, 7 % 3 AS rest FROM organisations "
                      "WHERE name LIKE '%renamed%' AND id >= :low", {"low": 2})
    assert row == {"n": 2, "total": 5, "rest": 1}
    assert records.one("SELECT ? AS flag", [True])["flag"] == 1  # booleans are stored as 0/1 on both


def test_bytes_come_back_as_bytes(records):
    with records.transaction() as unit:
        unit.execute("INSERT INTO devices (id, organisation_id, created_at) VALUES ('d', 1, 't')")
        unit.execute("INSERT INTO recordings (id, organisation_id, device_id, content_type, started_at, key_id, "
                     "sealed_key, created_at, state, last_activity_at) VALUES "
                     "('r', 1, 'd', 'video/mp4', 't', 'k', ?, 't', 'open', 't')", [b"\x00\xffkey"])
    assert bytes(records.one("SELECT sealed_key FROM recordings")["sealed_key"]) == b"\x00\xffkey"
    # A typed row gives BLOBs as bytes itself, on every adapter.
    recording = records.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ?", ["r"])
    assert type(recording.sealed_key) is bytes and recording.sealed_key == b"\x00\xffkey"


def test_typed_rows_hold_their_tables_columns(records):
    # Every kind's fields are its table's columns (a migration that adds a
    # column must add it to the kind, or `SELECT *` reads would drop it).
    tables = {Organisation: "organisations", Device: "devices", Staff: "staff", EnrollmentCode: "enrollment_codes",
              Recording: "recordings", Chunk: "chunks", Manifest: "manifests", LoginFailures: "login_failures",
              CopyRequest: "copy_requests"}
    for kind, table in tables.items():
        with records.snapshot() as view:
            columns = [d[0] for d in view.execute(f"SELECT * FROM {table} WHERE 1 = 0").description]
        assert [f.name for f in dataclasses.fields(kind)] == columns, table
    # Inside a transaction, reads are typed as well; a query that does not
    # select a kind's columns is refused, not half-filled.
    with records.transaction() as unit:
        assert unit.fetch(Organisation, "SELECT * FROM organisations ORDER BY id")[0].slug == "default"
        with pytest.raises(KeyError):
            unit.fetch_one(Organisation, "SELECT id, slug FROM organisations")


def test_text_sorts_byte_by_byte_on_every_adapter(records):
    names = ["a-b", "a_b", "aB", "ab", "A", "a.b", "2026-01-01T00:00:00.000Z"]
    with records.transaction() as unit:
        for name in names:
            unit.execute("INSERT INTO meta (key, value) VALUES (?, 'x')", [name])
    got = [row["key"] for row in records.query("SELECT key FROM meta WHERE value = 'x' ORDER BY key")]
    assert got == sorted(names)


def test_a_snapshot_sees_one_state_while_others_commit(records):
    with records.transaction() as unit:
        unit.execute("INSERT INTO meta (key, value) VALUES ('seen', 'old')")
    with records.snapshot() as view:
        assert view.one("SELECT value FROM meta WHERE key = 'seen'")["value"] == "old"
        writer = threading.Thread(target=lambda: _set(records, "seen", "new"))
        writer.start()
        writer.join(timeout=30)
        assert not writer.is_alive()
        assert view.one("SELECT value FROM meta WHERE key = 'seen'")["value"] == "old"
    assert records.one("SELECT value FROM meta WHERE key = 'seen'")["value"] == "new"


def _set(records, key: str, value: str) -> None:
    with records.transaction() as unit:
        unit.upsert("meta", {"key": key, "value": value}, key=["key"])


def test_read_then_write_loses_no_update_across_threads(records):
    threads = [threading.Thread(target=increment, args=(records, 25)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert records.one("SELECT value FROM meta WHERE key = 'counter'")["value"] == "200"


def test_processes_opening_a_new_database_together_migrate_it_once_and_lose_no_update(spec):
    # Three processes start on an empty database at once, as gunicorn's
    # workers (or several nodes) do; each then increments 40 times.
    children = [subprocess.Popen([sys.executable, "-m", "tests.contract.spec", "increment", *spec, "40"],
                                 cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [c.communicate(timeout=180)[1] for c in children]
    assert [c.returncode for c in children] == [0, 0, 0], errors
    records = open_records(spec)
    assert records.one("SELECT value FROM meta WHERE key = 'counter'")["value"] == "120"
    assert records.schema_version() == latest_version("sqlite")
    assert records.one("SELECT COUNT(*) AS n FROM organisations")["n"] == 1
    records.close()


def test_a_commit_survives_the_process_that_made_it_being_killed(spec):
    result = child("commit-then-die", *spec, "kept", check=False)
    assert result.returncode == -9 and "committed" in result.stdout, result.stderr
    records = open_records(spec)
    assert records.one("SELECT value FROM meta WHERE key = 'durable'")["value"] == "kept"
    records.close()


def test_what_a_commit_waits_for(records):
    # SQLite: WAL with synchronous=FULL (the WAL is fsync'd at every commit).
    # PostgreSQL: synchronous_commit on (the commit's WAL is flushed first).
    if records.backend == "sqlite":
        assert records.db.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert records.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    else:
        assert records.one("SHOW synchronous_commit")["synchronous_commit"] == "on"
        assert records.one("SHOW fsync")["fsync"] == "on"


def test_a_commit_survives_a_database_server_crash(own_postgresql):
    url = own_postgresql.new_database()
    records = PostgresRecords(url)
    _set(records, "durable", "kept")
    own_postgresql.stop("immediate")  # no checkpoint: only the flushed WAL remains
    own_postgresql.start()
    records.close()
    again = PostgresRecords(url)
    assert again.one("SELECT value FROM meta WHERE key = 'durable'")["value"] == "kept"
    again.close()


def test_a_new_database_is_made_at_the_latest_version_and_reopening_changes_nothing(spec, records):
    assert records.schema_version() == latest_version("sqlite") == latest_version("postgres")
    assert records.one("SELECT slug FROM organisations WHERE id = 1")["slug"] == "default"
    before = records.query("SELECT key, value FROM meta ORDER BY key")
    again = open_records(spec)
    assert again.query("SELECT key, value FROM meta ORDER BY key") == before
    assert again.one("SELECT COUNT(*) AS n FROM organisations")["n"] == 1
    again.close()


def test_a_newer_schema_is_refused_with_what_to_do_and_left_alone(spec, records):
    newer = latest_version("sqlite") + 1
    with records.transaction() as unit:
        unit.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(newer)])
    with pytest.raises(SchemaTooNew) as refused:
        open_records(spec)
    message = str(refused.value)
    assert f"schema version {newer}" in message and f"up to {newer - 1}" in message
    assert "Upgrade this server" in message and "nothing was changed" in message
    assert records.schema_version() == newer


def test_every_version_means_the_same_tables_and_columns_on_both_backends(postgresql, tmp_path):
    assert {m.version for m in migrations("sqlite")} >= {m.version for m in migrations("postgres")}
    sqlite_file = tmp_path / "witness.sqlite3"
    open_records(("sqlite", str(sqlite_file)))
    conn = sqlite3.connect(sqlite_file)
    in_sqlite = {table: {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                 for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                              "AND name != 'sqlite_sequence'")}
    in_postgres = {}
    for row in open_records(("postgresql", postgresql.new_database())).query(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"):
        in_postgres.setdefault(row["table_name"], set()).add(row["column_name"])
    assert in_postgres == in_sqlite


def test_database_down_is_busy_and_keeps_nothing_partial(own_postgresql):
    records = PostgresRecords(own_postgresql.new_database(), connect_timeout=2)
    with pytest.raises(Busy):
        with records.transaction() as unit:
            unit.execute("INSERT INTO meta (key, value) VALUES ('partial', 'first half')")
            own_postgresql.stop("immediate")
            unit.execute("INSERT INTO meta (key, value) VALUES ('partial2', 'second half')")
    started = time.monotonic()
    with pytest.raises(Busy, match="Retry shortly"):
        with records.transaction() as unit:
            pass
    with pytest.raises(Busy):
        records.query("SELECT 1")
    assert time.monotonic() - started < 20
    own_postgresql.start()
    assert _when_reachable(lambda: records.one("SELECT value FROM meta WHERE key = 'partial'")) is None  # nothing kept
    _set(records, "after", "back")  # the pool reconnected by itself
    assert records.one("SELECT value FROM meta WHERE key = 'after'")["value"] == "back"
    records.close()


def _when_reachable(read, timeout: float = 60):
    # The pool reconnects on its own, backing off while the server was down.
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except Busy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_file_of_version_3_is_brought_to_what_a_new_file_is(tmp_path):
    new, old = tmp_path / "new.sqlite3", tmp_path / "old.sqlite3"
    open_records(("sqlite", str(new))).close()
    open_records(("sqlite", str(old))).close()
    with sqlite3.connect(old) as conn:  # the last release without chunk_removals (or what versions 5 to 7 add)
        conn.execute("DROP TABLE chunk_removals")
        conn.execute("DROP TABLE audit_heads")
        for table in ("tlog_leaves", "tlog_hashes", "tlog_checkpoints", "tlog_witness_state",
                      "tlog_cosignatures"):  # and versions 6's and 7's
            conn.execute(f"DROP TABLE {table}")
        conn.execute("ALTER TABLE chunks DROP COLUMN log_index")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    assert open_records(("sqlite", str(old))).schema_version() == latest_version("sqlite")

    def schema(path):
        with sqlite3.connect(path) as conn:
            return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name != 'sqlite_sequence'"))
    assert schema(old) == schema(new)


def test_a_fault_in_the_sql_is_not_mistaken_for_busy_records(records):
    # A bug must fail loudly, not be answered 503 "retry shortly" for ever.
    with pytest.raises(Exception) as raised:
        with records.transaction() as unit:
            unit.execute("SELECT value FROM meta WHERE key = ? AND value = ?", ["only one"])
    assert not isinstance(raised.value, Busy)
    with pytest.raises(Exception) as raised:
        records.query("SELECT no_such_column FROM meta")
    assert not isinstance(raised.value, Busy)


# -- group commit (sync/records/group.py) ---------------------------------------

def test_group_commit_returns_each_step_after_one_shared_commit(records):
    from sync.records.group import GroupCommit

    group = GroupCommit(records)
    inside = threading.Event()
    release = threading.Event()
    results: dict[int, object] = {}

    def first(unit):
        unit.execute("INSERT INTO meta (key, value) VALUES ('step-0', 'x')")
        inside.set()
        assert release.wait(10)  # hold the commit while the others queue
        return 0

    def step(n):
        def run(unit):
            unit.execute("INSERT INTO meta (key, value) VALUES (?, ?)", [f"step-{n}", "x"])
            return n
        return run

    threads = [threading.Thread(target=lambda: results.__setitem__(0, group.run(first)))]
    threads[0].start()
    assert inside.wait(10)
    for n in range(1, 9):
        thread = threading.Thread(target=lambda n=n: results.__setitem__(n, group.run(step(n))))
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + 10
    while len(group._waiting) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Nothing of the waiting steps is answered or visible before its commit.
    assert results == {} and records.one("SELECT value FROM meta WHERE key = 'step-1'") is None
    release.set()
    for thread in threads:
        thread.join(10)
    assert results == {n: n for n in range(9)}
    assert len(records.query("SELECT key FROM meta WHERE key LIKE 'step-%'")) == 9
    assert (group.commits, group.steps) == (2, 9)  # the first alone, then the eight that queued behind it


def test_group_commit_a_failing_step_is_its_own_and_the_batch_commits(records):
    from sync.records.group import GroupCommit

    group = GroupCommit(records)
    gate = threading.Event()
    outcomes: dict[str, object] = {}

    def holder(unit):
        gate.wait(10)
        unit.execute("INSERT INTO meta (key, value) VALUES ('held', 'x')")

    def good(unit):
        unit.execute("INSERT INTO meta (key, value) VALUES ('good', 'x')")
        return "ok"

    def bad(unit):
        unit.execute("INSERT INTO meta (key, value) VALUES ('bad', 'x')")
        unit.execute("INSERT INTO meta (key, value) VALUES ('held', 'twice')")  # a real constraint error
        return "never"

    def call(name, step):
        try:
            outcomes[name] = group.run(step)
        except Exception as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=call, args=("holder", holder))]
    threads[0].start()
    time.sleep(0.2)
    for name, step in (("bad", bad), ("good", good)):
        threads.append(threading.Thread(target=call, args=(name, step)))
        threads[-1].start()
    time.sleep(0.2)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert outcomes["good"] == "ok" and outcomes["holder"] is None
    assert isinstance(outcomes["bad"], Exception) and not isinstance(outcomes["bad"], AssertionError)
    keys = {row["key"] for row in records.query("SELECT key FROM meta WHERE key IN ('held', 'good', 'bad')")}
    assert keys == {"held", "good"}  # the failed step left nothing, the others committed


def test_group_commit_a_failed_commit_fails_every_step_and_keeps_none(records):
    from sync.records.group import GroupCommit

    class Failing:
        """The records, whose commit fails (a full disk, the database gone)."""

        def __init__(self, inner):
            self.inner, self.failing = inner, True

        @contextlib.contextmanager
        def transaction(self):
            with self.inner.transaction() as unit:
                yield unit
                if self.failing:
                    raise Busy("the commit failed")

    failing = Failing(records)
    group = GroupCommit(failing)
    with pytest.raises(Busy):
        group.run(lambda unit: unit.execute("INSERT INTO meta (key, value) VALUES ('lost', 'x')"))
    assert records.one("SELECT value FROM meta WHERE key = 'lost'") is None
    # The same group commits again once the records do.
    failing.failing = False
    assert group.run(lambda unit: unit.execute("INSERT INTO meta (key, value) VALUES ('kept', 'x')").rowcount) == 1
    assert records.one("SELECT value FROM meta WHERE key = 'kept'") == {"value": "x"}
