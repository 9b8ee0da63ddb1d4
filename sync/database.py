"""The records: one SQLite file through sqlite-utils, in WAL mode with
`synchronous=FULL`, so a committed row behind an acknowledgement survives
power loss.

Connections are per thread (sqlite3 objects must not cross threads) and run in
autocommit mode; every write goes through `transaction()`, which takes the
write lock up front (`BEGIN IMMEDIATE`) so read-then-write sequences are
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
from typing import Iterator

import sqlite_utils

from .errors import Busy, StorageFull
from .timefmt import format_time, utc_now

SCHEMA_VERSION = 4
DEFAULT_ORGANISATION_ID = 1


class Database:
    """Owns the SQLite file: schema, per-thread connections, transactions."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._writer = threading.Lock()
        self._writer_lock_path = self.path.with_name(self.path.name + ".write-lock")
        self._writer_fd, self._writer_pid = -1, None
        _private_files(self.path)
        # Workers starting together on a new file would race to switch it to
        # WAL ("database is locked" at once, and a worker that fails to boot
        # stops gunicorn); under the writer lock they take turns.
        with self._writer, self._writer_flock():
            self.db.execute("PRAGMA journal_mode=WAL")
        with self.transaction() as db:
            _create_schema(db)

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection, opened on first use."""
        existing = getattr(self._local, "db", None)
        if existing is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            existing = self._local.db = sqlite_utils.Database(conn)
        return existing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction: commits on success (durably, given
        `synchronous=FULL`), rolls back on any exception. Raises
        `StorageFull` when the disk is full."""
        db = self.db
        with self._writer, self._writer_flock():
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
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
    def snapshot(self) -> Iterator[sqlite_utils.Database]:
        """A read transaction: every query inside sees one consistent state."""
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def query(self, sql: str, params=()) -> list[dict]:
        """Rows of a read-only query, as dicts."""
        return list(self.db.query(sql, params))

    def one(self, sql: str, params=()) -> dict | None:
        """The first row of a read-only query, or None."""
        for row in self.db.query(sql, params):
            return row
        return None

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        existing = getattr(self._local, "db", None)
        if existing is not None:
            existing.conn.close()
            self._local.db = None


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


def _create_schema(db: sqlite_utils.Database) -> None:
    # Tables are created with every column; `_add_missing_columns` brings a
    # version-1 file up to date (columns added since, with backfilled values).
    db["organisations"].create(
        {"id": int, "slug": str, "name": str, "created_at": str},
        pk="id",
        not_null={"slug", "name", "created_at"},
        if_not_exists=True,
    )
    db["organisations"].create_index(["slug"], unique=True, if_not_exists=True)
    db["devices"].create(
        {
            "id": str,
            "organisation_id": int,
            "created_at": str,
            "public_key_pem": str,
            "enrollment_code": str,
            "revoked_at": str,
            "revoked_by": str,
        },
        pk="id",
        not_null={"created_at"},
        if_not_exists=True,
    )
    db["staff"].create(
        {
            "id": int,
            "organisation_id": int,
            "username": str,
            "role": str,
            "password_hash": str,
            "created_at": str,
            "disabled_at": str,
            # Bumped when a password is set or sessions are ended for good:
            # tokens carry the generation they were issued under.
            "session_generation": int,
            # TOTP secret, sealed with a key kept outside the data folder.
            "totp_secret": bytes,
            "totp_enabled_at": str,
            "totp_last_step": int,
        },
        pk="id",
        not_null={"username", "role", "password_hash", "created_at"},
        if_not_exists=True,
    )
    db["staff"].create_index(["username"], unique=True, if_not_exists=True)
    db["enrollment_codes"].create(
        {"code": str, "organisation_id": int, "created_at": str, "note": str, "created_by": str, "revoked_at": str},
        pk="code",
        not_null={"created_at"},
        if_not_exists=True,
    )
    db["recordings"].create(
        {
            "id": str,
            "organisation_id": int,
            "device_id": str,
            "content_type": str,
            "started_at": str,
            "key_id": str,
            "sealed_key": bytes,
            "created_at": str,
            "state": str,
            "final_index": int,
            "complete_requested_at": str,
            "first_received_at": str,
            "last_received_at": str,
            "last_activity_at": str,
            # generation counts accepted chunks; a manifest covers one
            # generation, so a late chunk makes the recording due again.
            "generation": int,
            "finalized_generation": int,
            "manifest_version": int,
            # Kept with every chunk change so lists can filter on gaps
            # without counting chunks: gaps exist when chunk_count is below
            # (final_index, else max_index) + 1.
            "chunk_count": int,
            "max_index": int,
            "footage_size": int,
        },
        pk="id",
        not_null={"device_id", "content_type", "started_at", "key_id", "sealed_key",
                  "created_at", "state", "last_activity_at", "generation"},
        defaults={"generation": 0},
        foreign_keys=[("device_id", "devices", "id")],
        if_not_exists=True,
    )
    db["chunks"].create(
        {
            "recording_id": str,
            "idx": int,
            "final": int,
            "size": int,
            "sha256": str,
            "ciphertext_size": int,
            "ciphertext_sha256": str,
            "received_at": str,
            "captured_at": str,
            "device_signature": str,
        },
        pk=("recording_id", "idx"),
        not_null={"final", "size", "sha256", "ciphertext_size", "ciphertext_sha256", "received_at"},
        foreign_keys=[("recording_id", "recordings", "id")],
        if_not_exists=True,
    )
    db["manifests"].create(
        {
            "recording_id": str,
            "version": int,
            "state": str,
            "body": bytes,
            "sha256": str,
            "signature": bytes,
            # RFC 3161 TimeStampResp over the SHA-256 of `body` (built-in TSA).
            "tsr": bytes,
            # The same from the operator's external TSA (WITNESS_TSA_URL),
            # obtained after the manifest is committed; NULL until then.
            "external_tsr": bytes,
            "created_at": str,
        },
        pk=("recording_id", "version"),
        not_null={"state", "body", "sha256", "signature", "created_at"},
        foreign_keys=[("recording_id", "recordings", "id")],
        if_not_exists=True,
    )
    db["audit"].create(
        {
            "id": int,
            "at": str,
            "actor": str,
            "action": str,
            "recording_id": str,
            "organisation_id": int,
            "detail": str,
            "prev_sha256": str,
            # The previous entry about the same recording: a recording's
            # custody log is a chain of its own that can be checked alone.
            "recording_prev_sha256": str,
            "sha256": str,
        },
        pk="id",
        not_null={"at", "actor", "action", "detail", "prev_sha256", "sha256"},
        if_not_exists=True,
    )
    # No longer written or read: failed logins are throttled in memory only
    # (sync/logins.py), per username and client, never locking an account.
    # The table stays so files of earlier releases need no migration; what
    # they left in it (usernames as typed, sometimes a password typed into
    # the wrong field) is dropped.
    db["login_failures"].create(
        {"username": str, "failures": int, "first_failed_at": str, "last_failed_at": str, "locked_until": str},
        pk="username",
        not_null={"failures", "first_failed_at", "last_failed_at"},
        if_not_exists=True,
    )
    db.execute("DELETE FROM login_failures")
    # Ended sessions (logout): every token of the session is refused until
    # the session's refresh token would have expired anyway.
    db["ended_sessions"].create(
        {"sid": str, "ended_at": str, "expires_at": int},
        pk="sid",
        not_null={"ended_at", "expires_at"},
        if_not_exists=True,
    )
    # A lawyer's request for a signed copy of a recording, and its bundle.
    # state: pending -> approved | denied; approved -> building -> ready | failed.
    db["copy_requests"].create(
        {
            "id": str,
            "organisation_id": int,
            "recording_id": str,
            "requested_by": str,  # staff username
            "case_reference": str,
            "purpose": str,
            "state": str,
            "created_at": str,
            "updated_at": str,
            "decided_by": str,
            "decided_at": str,
            "decision_reason": str,
            "manifest_version": int,
            "bundle_size": int,
            "bundle_sha256": str,
            "built_at": str,
            "failure": str,
        },
        pk="id",
        not_null={"organisation_id", "recording_id", "requested_by", "case_reference", "purpose", "state",
                  "created_at", "updated_at"},
        foreign_keys=[("recording_id", "recordings", "id")],
        if_not_exists=True,
    )
    # Every removal of a stored chunk (an unacknowledged leftover, a damaged
    # chunk quarantined) is announced here before the store is asked, and
    # marked done after; an upload whose name a removal touched is refused
    # rather than committed without its object (sync/ingest.py). seq only
    # grows (AUTOINCREMENT), so "announced since I looked" is a comparison.
    db.execute("""CREATE TABLE IF NOT EXISTS chunk_removals (
                      seq INTEGER PRIMARY KEY AUTOINCREMENT,
                      recording_id TEXT NOT NULL,
                      name TEXT NOT NULL,
                      announced_at TEXT NOT NULL,
                      done_at TEXT)""")
    db.execute("CREATE INDEX IF NOT EXISTS idx_chunk_removals_name ON chunk_removals (recording_id, name)")
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    _add_missing_columns(db)
    for table, columns in {
        "recordings": [["state", "last_activity_at"], ["device_id"], ["organisation_id", "created_at"]],
        "audit": [["recording_id"], ["organisation_id"], ["actor"], ["at"]],
        "devices": [["organisation_id"]],
        "staff": [["organisation_id"]],
        "ended_sessions": [["expires_at"]],
        "login_failures": [["last_failed_at"]],
        "copy_requests": [["organisation_id", "created_at"], ["state"], ["recording_id"]],
    }.items():
        for index in columns:
            db[table].create_index(index, if_not_exists=True)
    if db["organisations"].count == 0:
        db["organisations"].insert({"id": DEFAULT_ORGANISATION_ID, "slug": "default",
                                    "name": "Default organisation", "created_at": format_time(utc_now())})
    db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")


def _add_missing_columns(db: sqlite_utils.Database) -> None:
    """Bring an older file up to date. Version 2 added organisations
    (everything existing joins the default one), staff sessions and TOTP,
    recording counters (computed from the chunks held) and audit chain
    columns; version 3 the manifests' time-stamp tokens (`copy_requests` is
    a new table, made above); version 4 only a new table (`chunk_removals`)."""
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
