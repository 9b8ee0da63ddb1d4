"""The records port: what the domain asks of the database, whichever holds it.

`Records` is a unit of work. `transaction()` yields a `Unit` on which every
read and write of one domain step runs; it commits when the block ends and
rolls back on any exception. Write transactions are serialized, as SQLite's
`BEGIN IMMEDIATE` serializes them: a domain step that reads, decides and
writes (a chunk's index, the audit chain's head, a copy request's state) may
assume no other writer moves between its read and its write, on every
adapter. `snapshot()` yields a `Unit` for reads that must see one consistent
state. `query` and `one` outside both are single reads (inside a
transaction of the same thread, they run on it). `fetch` and `fetch_one`
return typed rows (`rows.py`: one frozen dataclass per table) where
`query` and `one` return dicts (projections and aggregates).

SQL given to a `Unit` is the portable subset both adapters run: `?` or
`:name` placeholders, `INSERT ... RETURNING`, `INSERT ... ON CONFLICT (...)
DO UPDATE`, `COALESCE`, `CASE` (not two-argument `MAX`/`MIN`), no
`INSERT OR ...`, no SQLite or PostgreSQL functions of their own. `insert`
and `upsert` build those statements for a row given as a dict.

Adapters: `sqlite.SQLiteRecords` (the embedded default, a file in the data
folder) and `postgres.PostgresRecords` (`WITNESS_DATABASE_URL=postgresql://`).
`open_records` chooses one; nothing else does. Both apply the numbered
migrations in `migrations/<backend>/` when opened and refuse a schema newer
than this release knows (`SchemaTooNew`).

Errors every adapter raises the same way: `sync.errors.Busy` when the records
cannot be reached or stay locked (nothing was kept; retry),
`sync.errors.StorageFull` when the database's disk is full, `SchemaTooNew`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from ..errors import WitnessError
from .rows import R

DEFAULT_ORGANISATION_ID = 1
RECORDS_FILE = "witness.sqlite3"

Params = Sequence[Any] | Mapping[str, Any]


class SchemaTooNew(WitnessError):
    """The records were written by a newer release than this one; nothing
    was changed. Upgrade the server (or restore a backup this release made)."""


class UnknownSchema(WitnessError):
    """The database holds tables but no Witness Sync schema version: the
    wrong file or database was named; nothing was changed."""


class Outcome(Protocol):
    """What a write statement reports."""

    rowcount: int


class Unit(Protocol):
    """One transaction's (or snapshot's) view of the records."""

    def execute(self, sql: str, params: Params = ()) -> Outcome:
        """Run one statement; `.rowcount` says how many rows it changed."""

    def query(self, sql: str, params: Params = ()) -> list[dict]:
        """The rows of a query, as dicts keyed by column name."""

    def one(self, sql: str, params: Params = ()) -> dict | None:
        """The first row of a query, or None."""

    def fetch(self, kind: type[R], sql: str, params: Params = ()) -> list[R]:
        """The rows of a query as typed rows of `kind` (`rows.py`)."""

    def fetch_one(self, kind: type[R], sql: str, params: Params = ()) -> R | None:
        """The first row of a query as a typed row of `kind`, or None."""

    def insert(self, table: str, row: Mapping[str, Any], *, returning: str | None = None) -> Any:
        """Insert one row; with `returning`, the value of that column (an id
        the database chose)."""

    def upsert(self, table: str, row: Mapping[str, Any], *, key: Sequence[str]) -> None:
        """Insert one row, or update the other columns of the row with the
        same `key` columns."""


class Records(Protocol):
    """The unit-of-work port (see the module docstring)."""

    backend: str  # "sqlite" or "postgresql", for operators and tests

    def transaction(self) -> contextlib.AbstractContextManager[Unit]:
        """A serialized write transaction. Raises `Busy`, `StorageFull`."""

    def snapshot(self) -> contextlib.AbstractContextManager[Unit]:
        """A read-only transaction seeing one consistent state. Raises `Busy`."""

    def query(self, sql: str, params: Params = ()) -> list[dict]:
        """Rows of one read. Raises `Busy`."""

    def one(self, sql: str, params: Params = ()) -> dict | None:
        """The first row of one read, or None. Raises `Busy`."""

    def fetch(self, kind: type[R], sql: str, params: Params = ()) -> list[R]:
        """Typed rows of one read. Raises `Busy`."""

    def fetch_one(self, kind: type[R], sql: str, params: Params = ()) -> R | None:
        """The first typed row of one read, or None. Raises `Busy`."""

    def schema_version(self) -> int:
        """The schema version the records are at."""

    def close(self) -> None:
        """Release connections (this thread's, or the pool)."""


class TypedReads:
    """`fetch` and `fetch_one` for any class with `query` and `one`: the
    adapters' units and records inherit them."""

    def fetch(self, kind: type[R], sql: str, params: Params = ()) -> list[R]:
        return [kind.of(row) for row in self.query(sql, params)]

    def fetch_one(self, kind: type[R], sql: str, params: Params = ()) -> R | None:
        row = self.one(sql, params)
        return None if row is None else kind.of(row)


def open_records(data_dir: Path, database_url: str | None = None) -> Records:
    """The records `WITNESS_DATABASE_URL` names: PostgreSQL for a
    `postgresql://` (or `postgres://`) URL, else the SQLite file in
    `data_dir`. Migrates them to this release's schema. Raises
    `SchemaTooNew`, `Busy` (PostgreSQL unreachable), `ValueError` for
    another kind of URL."""
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("WITNESS_DATABASE_URL must be a postgresql:// URL (or unset for the embedded SQLite).")
        from .postgres import PostgresRecords  # psycopg is loaded only when it is used

        return PostgresRecords(database_url)
    from .sqlite import SQLiteRecords

    return SQLiteRecords(Path(data_dir) / RECORDS_FILE)


def insert_sql(table: str, row: Mapping[str, Any], returning: str | None) -> tuple[str, list]:
    """The portable INSERT for one row (both adapters run it unchanged)."""
    columns = list(row)
    sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
           + (f" RETURNING {returning}" if returning else ""))
    return sql, [row[c] for c in columns]


def upsert_sql(table: str, row: Mapping[str, Any], key: Sequence[str]) -> tuple[str, list]:
    """The portable INSERT ... ON CONFLICT DO UPDATE for one row."""
    columns = list(row)
    others = [c for c in columns if c not in key]
    action = (f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in others)}" if others else "DO NOTHING")
    sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
           f"ON CONFLICT ({', '.join(key)}) {action}")
    return sql, [row[c] for c in columns]


def first(rows: Iterator[dict] | list[dict]) -> dict | None:
    for row in rows:
        return row
    return None
