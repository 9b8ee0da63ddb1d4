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

SCHEMA_VERSION = 1


class Database:
    """Owns the SQLite file: schema, per-thread connections, transactions."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._writer = threading.Lock()
        self._writer_lock_path = self.path.with_name(self.path.name + ".write-lock")
        self._writer_fd, self._writer_pid = -1, None
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


def _create_schema(db: sqlite_utils.Database) -> None:
    db["devices"].create(
        {
            "id": str,
            "created_at": str,
            "public_key_pem": str,
            "enrollment_code": str,
            "revoked_at": str,
        },
        pk="id",
        not_null={"created_at"},
        if_not_exists=True,
    )
    db["staff"].create(
        {
            "id": int,
            "username": str,
            "role": str,
            "password_hash": str,
            "created_at": str,
            "disabled_at": str,
        },
        pk="id",
        not_null={"username", "role", "password_hash", "created_at"},
        if_not_exists=True,
    )
    db["staff"].create_index(["username"], unique=True, if_not_exists=True)
    db["enrollment_codes"].create(
        {"code": str, "created_at": str, "note": str},
        pk="code",
        not_null={"created_at"},
        if_not_exists=True,
    )
    db["recordings"].create(
        {
            "id": str,
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
        },
        pk="id",
        not_null={"device_id", "content_type", "started_at", "key_id", "sealed_key",
                  "created_at", "state", "last_activity_at", "generation"},
        defaults={"generation": 0},
        foreign_keys=[("device_id", "devices", "id")],
        if_not_exists=True,
    )
    db["recordings"].create_index(["state", "last_activity_at"], if_not_exists=True)
    db["recordings"].create_index(["device_id"], if_not_exists=True)
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
            "detail": str,
            "prev_sha256": str,
            "sha256": str,
        },
        pk="id",
        not_null={"at", "actor", "action", "detail", "prev_sha256", "sha256"},
        if_not_exists=True,
    )
    db["audit"].create_index(["recording_id"], if_not_exists=True)
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
