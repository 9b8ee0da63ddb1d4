"""The embedded records: one SQLite file through sqlite-utils, in WAL mode
with `synchronous=FULL`, so a committed row behind an acknowledgement
survives power loss.

Connections are per thread (sqlite3 objects must not cross threads) and run
in autocommit mode; every write goes through `transaction()`, which takes
the write lock up front (`BEGIN IMMEDIATE`) so read-then-write sequences are
serialized across threads and gunicorn workers alike.

Writers queue on a blocking lock (a thread lock, then `flock` on a file
beside the database) before `BEGIN IMMEDIATE`. Left to SQLite alone, a
writer that finds the database locked sleeps and polls (1, 2, 5 ... 100 ms),
which under many concurrent uploads turned millisecond commits into
second-long acknowledgement delays (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import sqlite_utils

from ..errors import Busy, StorageFull
from . import DEFAULT_ORGANISATION_ID, Params, SchemaTooNew, TypedReads, UnknownSchema, insert_sql, upsert_sql
from .migrations import latest_version, migrations, plan

# Files from before numbered migrations carry versions 1 to 3 (4 when made
# by the last release without them); the legacy upgrade brings them to this.
LEGACY_VERSION = 4


class SQLiteUnit(TypedReads):
    """A transaction's or snapshot's view of the SQLite file (see `Unit`)."""

    def __init__(self, db: sqlite_utils.Database):
        self._db = db

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def query(self, sql: str, params: Params = ()) -> list[dict]:
        cursor = self._db.execute(sql, params)
        keys = [d[0] for d in cursor.description]
        return [dict(zip(keys, row)) for row in cursor]

    def one(self, sql: str, params: Params = ()) -> dict | None:
        cursor = self._db.execute(sql, params)
        row = cursor.fetchone()
        return None if row is None else dict(zip([d[0] for d in cursor.description], row))

    def insert(self, table: str, row: Mapping[str, Any], *, returning: str | None = None) -> Any:
        sql, params = insert_sql(table, row, returning)
        cursor = self._db.execute(sql, params)
        if returning:
            value = cursor.fetchone()[0]
            cursor.close()
            return value
        return None

    def upsert(self, table: str, row: Mapping[str, Any], *, key: Sequence[str]) -> None:
        sql, params = upsert_sql(table, row, key)
        self._db.execute(sql, params)


class SQLiteRecords(TypedReads):
    """Owns the SQLite file: migrations, per-thread connections, transactions."""

    backend = "sqlite"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._writer = threading.Lock()
        self._writer_lock_path = self.path.with_name(self.path.name + ".write-lock")
        self._writer_fd, self._writer_pid = -1, None
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_files(self.path)
        # Workers starting together on a new file would race to switch it to
        # WAL ("database is locked" at once, and a worker that fails to boot
        # stops gunicorn); under the writer lock they take turns.
        with self._writer, self._writer_flock():
            self._connection().execute("PRAGMA journal_mode=WAL")
        with self.transaction() as unit:
            _migrate(unit._db)

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection (SQLite only: for the adapter's own
        tests and for operator tools that need the file itself)."""
        return self._connection()

    def _connection(self) -> sqlite_utils.Database:
        existing = getattr(self._local, "db", None)
        if existing is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            existing = self._local.db = sqlite_utils.Database(conn)
        return existing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SQLiteUnit]:
        """A write transaction: commits on success (durably, given
        `synchronous=FULL`), rolls back on any exception. Raises
        `StorageFull` when the disk is full, `Busy` when another program
        holds the file."""
        db = self._connection()
        with self._writer, self._writer_flock():
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield SQLiteUnit(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if db.conn.in_transaction:
                    db.execute("ROLLBACK")
                reason = str(exc).lower()
                if "full" in reason:
                    raise StorageFull("The server's disk is full; nothing was kept. Retry later.") from exc
                if "locked" in reason or "busy" in reason:
                    # Only another program holding the database (a backup, an
                    # operator's sqlite3) gets here: our writers queue above.
                    raise Busy("The server's records are busy; nothing was kept. Retry shortly.") from exc
                raise

    @contextlib.contextmanager
    def _writer_flock(self) -> Iterator[None]:
        # One descriptor per process: flock excludes open file descriptions,
        # so a descriptor inherited across fork would not exclude anything.
        if self._writer_pid != os.getpid():
            self._writer_fd = os.open(self._writer_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._writer_pid = os.getpid()
        fcntl.flock(self._writer_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._writer_fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[SQLiteUnit]:
        """A read transaction: every query inside sees one consistent state."""
        db = self._connection()
        db.execute("BEGIN")
        try:
            yield SQLiteUnit(db)
        finally:
            db.execute("COMMIT")

    def query(self, sql: str, params: Params = ()) -> list[dict]:
        """Rows of a read-only query, as dicts."""
        return SQLiteUnit(self._connection()).query(sql, params)

    def one(self, sql: str, params: Params = ()) -> dict | None:
        """The first row of a read-only query, or None."""
        return SQLiteUnit(self._connection()).one(sql, params)

    def schema_version(self) -> int:
        return int(self.one("SELECT value FROM meta WHERE key = 'schema_version'")["value"])

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        existing = getattr(self._local, "db", None)
        if existing is not None:
            existing.conn.close()
            self._local.db = None


def _migrate(db: sqlite_utils.Database) -> None:
    """Inside the caller's write transaction: bring the file to this
    release's schema, or refuse a newer one (nothing changed)."""
    latest = latest_version("sqlite")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        current = None
    elif "meta" not in tables:
        raise UnknownSchema(f"{_path(db)} holds tables but no schema version: it is not a Witness Sync records "
                           "file. Point WITNESS_DATA_DIR at the right folder; nothing was changed.")
    else:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        current = int(row[0]) if row else 1
        if current > latest:
            raise SchemaTooNew(
                f"The records in {_path(db)} are at schema version {current}, written by a newer Witness Sync; "
                f"this release knows versions up to {latest}. Upgrade this server (or restore a backup made "
                "by this release); nothing was changed.")
    upgraded = current is not None and current < LEGACY_VERSION
    if upgraded:
        _upgrade_legacy(db)
        current = LEGACY_VERSION
    steps = plan("sqlite", current)
    for migration in steps:
        for statement in migration.statements():
            db.execute(statement)
    if current is None or steps or upgraded:
        db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value", [str(latest)])


def _path(db: sqlite_utils.Database) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return row[2] if row else "the records file"


def _private_files(path: Path) -> None:
    """Make the records file, and the -wal and -shm files SQLite makes beside
    it, readable by the server's user only (0600), whatever the umask. SQLite
    creates the -wal and -shm files with the database file's own mode (and
    fchmods them to it past the umask), so creating the database file 0600
    before the first connection is enough for new files; files of an
    earlier release, made 0644, are narrowed here."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
                      path.with_name(path.name + "-journal")):
        try:
            os.chmod(companion, 0o600)
        except FileNotFoundError:
            pass


def _upgrade_legacy(db: sqlite_utils.Database) -> None:
    """Bring a file of versions 1 to 3 (before numbered migrations) to
    version 4, as the schema code of those releases did on every start:
    version 2 added organisations (everything existing joins the default
    one), staff sessions and TOTP, recording counters (computed from the
    chunks held) and audit chain columns; version 3 the manifests' time-stamp
    tokens and `copy_requests`; version 4 `chunk_removals`. Some version-2
    files have `manifests.tsr` and some do not, so columns are added only
    where missing, not by fixed ALTER statements."""
    tables, indexes = _baseline_if_not_exists()
    for statement in tables:
        db.execute(statement)
    added = {
        "devices": {"organisation_id": int, "revoked_by": str},
        "staff": {"organisation_id": int, "session_generation": int, "totp_secret": bytes,
                  "totp_enabled_at": str, "totp_last_step": int},
        "enrollment_codes": {"organisation_id": int, "created_by": str, "revoked_at": str},
        "recordings": {"organisation_id": int, "chunk_count": int, "max_index": int, "footage_size": int},
        "audit": {"organisation_id": int, "recording_prev_sha256": str},
        "manifests": {"tsr": bytes, "external_tsr": bytes},
    }
    for table, columns in added.items():
        have = db[table].columns_dict
        for name, kind in columns.items():
            if name not in have:
                db[table].add_column(name, kind)
    for table in ("devices", "staff", "enrollment_codes", "recordings"):
        db.execute(f"UPDATE {table} SET organisation_id = ? WHERE organisation_id IS NULL", [DEFAULT_ORGANISATION_ID])
    db.execute("UPDATE staff SET session_generation = 0 WHERE session_generation IS NULL")
    db.execute(
        """UPDATE recordings SET
               chunk_count = (SELECT COUNT(*) FROM chunks c WHERE c.recording_id = recordings.id),
               max_index = (SELECT MAX(idx) FROM chunks c WHERE c.recording_id = recordings.id),
               footage_size = (SELECT COALESCE(SUM(size), 0) FROM chunks c WHERE c.recording_id = recordings.id)
           WHERE chunk_count IS NULL"""
    )
    # Failed logins are throttled in memory since version 2; what earlier
    # files left here (usernames as typed, sometimes a password typed into
    # the wrong field) is dropped.
    db.execute("DELETE FROM login_failures")
    for statement in indexes:
        db.execute(statement)
    if db.execute("SELECT COUNT(*) FROM organisations").fetchone()[0] == 0:
        db.execute("INSERT INTO organisations (id, slug, name, created_at) VALUES "
                   "(?, 'default', 'Default organisation', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                   [DEFAULT_ORGANISATION_ID])


def _baseline_if_not_exists() -> tuple[list[str], list[str]]:
    """The version-4 baseline's tables and indexes as CREATE ... IF NOT
    EXISTS: what a file of versions 1 to 3 lacks is made; its own tables
    are widened by `_upgrade_legacy` before the indexes are made."""
    baseline = next(m for m in migrations("sqlite") if m.baseline and m.version == LEGACY_VERSION)
    tables, indexes = [], []
    for statement in baseline.statements():
        for made in ("CREATE TABLE ", "CREATE UNIQUE INDEX ", "CREATE INDEX "):
            if statement.startswith(made):
                (tables if made == "CREATE TABLE " else indexes).append(
                    statement.replace(made, made + "IF NOT EXISTS ", 1))
    return tables, indexes
