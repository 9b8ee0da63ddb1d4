"""SQLite-only parts of backup and restore (`sync/backup.py`), beside the
SQLite adapter: a consistent copy of a live records file taken with
SQLite's online backup API, a read-only view of such a copy, and putting a
copy into an empty live file.

The online backup API copies every page inside one read transaction
(`pages=-1`: one step), so the copy is one consistent state of the
records; in WAL mode writers go on committing meanwhile (they are neither
blocked nor seen). Copies are left in rollback-journal mode (no -wal or
-shm beside them), so the file alone is the whole copy and its SHA-256
means something.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Iterator

from ..durable import fsync_path
from . import Params


def snapshot_into(live: Path, target: Path) -> None:
    """Copy the live records file `live` (which servers may be writing) into
    a new file `target`, consistently, and make it durable (file and folder
    fsync'd). `target` must not exist."""
    target = Path(target)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    source = sqlite3.connect(live, timeout=30.0)  # reads only; read-write so WAL files may be made
    try:
        source.execute("PRAGMA busy_timeout=30000")
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            source.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    finally:
        source.close()
    fsync_path(target)
    fsync_path(target.parent, directory=True)


def restore_into(copy: Path, live: Path) -> None:
    """Replace the content of the live records file `live` (empty of
    records, no server running on it) with the copy's, through the backup
    API, so SQLite's own journal (WAL) and locks stay in charge of the live
    file; committed with `synchronous=FULL`."""
    source = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(live, isolation_level=None, timeout=30.0)
        try:
            target.execute("PRAGMA synchronous=FULL")
            target.execute("PRAGMA busy_timeout=30000")
            source.backup(target, pages=-1)
            # Leave nothing of the copy only in the WAL: fold it into the file.
            target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            target.close()
    finally:
        source.close()


class ReadOnlyRecords:
    """A records copy opened read-only (never migrated, never written):
    `query`, `one`, `iterate` and `schema_version`, enough for the audit
    chain check (`sync.audit.verify_chain` reads `.query` and `.one`)."""

    backend = "sqlite"

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(self.path)
        self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        self._conn.execute("PRAGMA query_only=ON")

    def query(self, sql: str, params: Params = ()) -> list[dict]:
        cursor = self._conn.execute(sql, params)
        keys = [d[0] for d in cursor.description]
        return [dict(zip(keys, row)) for row in cursor]

    def one(self, sql: str, params: Params = ()) -> dict | None:
        cursor = self._conn.execute(sql, params)
        row = cursor.fetchone()
        return None if row is None else dict(zip([d[0] for d in cursor.description], row))

    def iterate(self, sql: str, params: Params = ()) -> Iterator[dict]:
        """Rows one at a time (memory stays flat however many)."""
        cursor = self._conn.execute(sql, params)
        keys = [d[0] for d in cursor.description]
        for row in cursor:
            yield dict(zip(keys, row))

    def schema_version(self) -> int:
        row = self.one("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(row["value"]) if row else 1

    @contextlib.contextmanager
    def snapshot(self) -> Iterator["ReadOnlyRecords"]:
        yield self

    def close(self) -> None:
        self._conn.close()


def is_records_file(path: Path) -> bool:
    """Whether `path` opens as an SQLite database with a `meta` table."""
    try:
        records = ReadOnlyRecords(path)
    except (FileNotFoundError, sqlite3.Error):
        return False
    try:
        return records.one("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'") is not None
    except sqlite3.Error:
        return False
    finally:
        records.close()

