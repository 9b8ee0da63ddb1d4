"""Records on PostgreSQL (psycopg 3, a psycopg_pool pool per process), for
several app nodes sharing one database (`WITNESS_DATABASE_URL`).

What the domain assumes of a write transaction is what SQLite's `BEGIN
IMMEDIATE` gives: one writer at a time, so a step that reads and then writes
(the audit chain's head and next id, a chunk index taken or not, a
recording's counters, a copy request's state) never interleaves with
another. Every write transaction here therefore first takes one
transaction-scoped advisory lock (`pg_advisory_xact_lock`), held to its
commit or rollback, and runs in READ COMMITTED: each statement after the
lock sees every transaction committed before it, exactly as in SQLite.
(REPEATABLE READ or SERIALIZABLE would take their snapshot before the lock
is granted, and could not be retried here: the caller's block runs once.)
Reads outside transactions are not serialized; `snapshot()` is REPEATABLE
READ, READ ONLY.

Durability: every connection sets `synchronous_commit = on`, so a commit
returns only once its WAL is flushed on the server: what an acknowledgement
means on SQLite with `synchronous=FULL`. (What the server's own disk and
replication promise is its operator's; docs/operations.md.)

Failure: a database that cannot be reached, a connection lost mid-
transaction, a lock not granted within the lock timeout, or a server going
down all raise `Busy` (503 with Retry-After); the transaction is rolled back
by the server, so nothing partial is kept. A full disk raises `StorageFull`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Dumper
from psycopg.rows import dict_row
from psycopg.types.numeric import NumericLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import Busy, StorageFull
from . import Params, SchemaTooNew, TypedReads, UnknownSchema, insert_sql, upsert_sql
from .migrations import latest_version, plan

# The one lock every write transaction takes (and the migrations, which run
# in one): any constant works, as long as every node uses the same one.
WRITER_LOCK_KEY = 0x5749544E45535301  # "WITNESS" 0x01
LOCK_TIMEOUT_SECONDS = 30
CONNECT_TIMEOUT_SECONDS = 5
# How long opening the records waits for an unreachable database (below
# gunicorn's 60 s boot timeout).
START_WAIT_SECONDS = 30
log = logging.getLogger("witness.records")


class PostgresUnit(TypedReads):
    """A transaction's or snapshot's view of the database (see `Unit`)."""

    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> psycopg.Cursor:
        return _guarded(self._conn.execute, *_statement(sql, params))

    def query(self, sql: str, params: Params = ()) -> list[dict]:
        return self.execute(sql, params).fetchall()

    def one(self, sql: str, params: Params = ()) -> dict | None:
        return self.execute(sql, params).fetchone()

    def insert(self, table: str, row: Mapping[str, Any], *, returning: str | None = None) -> Any:
        sql, params = insert_sql(table, row, returning)
        cursor = self.execute(sql, params)
        return cursor.fetchone()[returning] if returning else None

    def upsert(self, table: str, row: Mapping[str, Any], *, key: Sequence[str]) -> None:
        self.execute(*upsert_sql(table, row, key))


class PostgresRecords(TypedReads):
    """A pool of connections to one PostgreSQL database, migrated on open."""

    backend = "postgresql"

    def __init__(self, url: str, *, max_connections: int = 12, connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
                 start_wait_seconds: float = START_WAIT_SECONDS):
        self.url = url
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None
        self._pool_lock = threading.Lock()
        self._local = threading.local()
        # A worker (re)started while the database restarts waits for it
        # rather than failing to boot, which would stop its whole pool.
        deadline = time.monotonic() + start_wait_seconds
        while True:
            try:
                with self.transaction() as unit:
                    _migrate(unit)
                break
            except Busy:
                if time.monotonic() >= deadline:
                    raise
                log.warning("the records' database cannot be reached yet; trying again")
                time.sleep(1)

    def _connections(self) -> ConnectionPool:
        # One pool per process: connections must not cross a fork (gunicorn
        # forks workers after the master may have opened the records).
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=self.max_connections, open=True,
                    timeout=self.connect_timeout, configure=_configure, check=ConnectionPool.check_connection,
                    kwargs={"autocommit": True, "row_factory": dict_row,
                            "connect_timeout": max(1, int(self.connect_timeout)),
                            "application_name": f"witness-sync pid {os.getpid()}"},
                    name="witness-records")
                self._pool_pid = os.getpid()
            return self._pool

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        try:
            with self._connections().connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise Busy("The server's records cannot be reached; nothing was kept. Retry shortly.") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PostgresUnit]:
        """A write transaction, serialized with every other (see the module
        docstring): commits on success, rolls back on any exception. Raises
        `Busy`, `StorageFull`."""
        if getattr(self._local, "unit", None) is not None:
            raise RuntimeError("a records transaction is already open in this thread")
        with self._connection() as conn:
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'")
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", [WRITER_LOCK_KEY])
                    unit = self._local.unit = PostgresUnit(conn)
                    try:
                        yield unit
                    finally:
                        self._local.unit = None
            except psycopg.Error as exc:
                raise _domain_error(exc) from exc

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[PostgresUnit]:
        """A read-only transaction seeing one consistent state. Raises `Busy`."""
        with self._connection() as conn:
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield PostgresUnit(conn)
            except psycopg.Error as exc:
                raise _domain_error(exc) from exc

    def query(self, sql: str, params: Params = ()) -> list[dict]:
        """Rows of one read (inside this thread's open transaction, on it)."""
        unit = getattr(self._local, "unit", None)
        if unit is not None:
            return unit.query(sql, params)
        with self._connection() as conn:
            return PostgresUnit(conn).query(sql, params)

    def one(self, sql: str, params: Params = ()) -> dict | None:
        """The first row of one read, or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def schema_version(self) -> int:
        return int(self.one("SELECT value FROM meta WHERE key = 'schema_version'")["value"])

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None


def _migrate(unit: PostgresUnit) -> None:
    """Inside the caller's (serialized) write transaction: bring the
    database to this release's schema, or refuse a newer one."""
    latest = latest_version("postgres")
    if unit.one("SELECT to_regclass('meta') AS t")["t"] is None:
        others = unit.one("SELECT COUNT(*) AS n FROM pg_tables WHERE schemaname = current_schema()")["n"]
        if others:
            raise UnknownSchema("The database WITNESS_DATABASE_URL names holds tables but no Witness Sync schema "
                                "version: it is another application's. Name an empty database; nothing was "
                                "changed.")
        current = None
    else:
        row = unit.one("SELECT value FROM meta WHERE key = 'schema_version'")
        current = int(row["value"])
        if current > latest:
            raise SchemaTooNew(
                f"The records in the database WITNESS_DATABASE_URL names are at schema version {current}, "
                f"written by a newer Witness Sync; this release knows versions up to {latest}. Upgrade this "
                "server (or restore a backup made by this release); nothing was changed.")
    steps = plan("postgres", current)
    for migration in steps:
        for statement in migration.statements():
            unit._conn.execute(statement)
    if steps:
        unit.upsert("meta", {"key": "schema_version", "value": str(latest)}, key=["key"])


class _BoolAsInteger(Dumper):
    """Python booleans go in as 0/1, as sqlite3 stores them: the schema has
    integer flags (`chunks.final`), not boolean columns."""

    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj):
        return b"1" if obj else b"0"


class _WholeNumericAsInt(NumericLoader):
    """SUM() of BIGINTs is NUMERIC in PostgreSQL; SQLite gives an int."""

    def load(self, data):
        value = super().load(data)
        return int(value) if value == value.to_integral_value() else float(value)


def _configure(conn: psycopg.Connection) -> None:
    conn.adapters.register_dumper(bool, _BoolAsInteger)
    conn.adapters.register_loader("numeric", _WholeNumericAsInt)
    conn.execute("SET synchronous_commit = on")


def _statement(sql: str, params: Params) -> tuple[str, Params]:
    if isinstance(params, Mapping):
        return _translated(sql), params
    return _translated(sql), list(params)


_TOKENS = re.compile(r"""('(?:[^']|'')*')|("(?:[^"])*")|(--[^\n]*)|(::)|(\?)|(?<![:\w]):([A-Za-z_]\w*)|(%)""")


@functools.lru_cache(maxsize=1024)
def _translated(sql: str) -> str:
    """`?` and `:name` placeholders as psycopg's `%s` and `%(name)s`, and
    every literal `%` doubled; placeholders are not looked for in quoted
    text, comments or `::` casts."""

    def replace(match: re.Match) -> str:
        if match[5]:
            return "%s"
        if match[6]:
            return f"%({match[6]})s"
        if match[7]:
            return "%%"
        # psycopg reads `%` even inside quotes: double it there too.
        return match[0].replace("%", "%%")

    return _TOKENS.sub(replace, sql)


def _guarded(call, *args):
    try:
        return call(*args)
    except psycopg.Error as exc:
        raise _domain_error(exc) from exc


def _domain_error(exc: psycopg.Error) -> Exception:
    """The domain's error for what psycopg raised (or `exc` itself for a
    fault in the SQL, which is a bug, not a condition to retry)."""
    if isinstance(exc, (Busy, StorageFull)):
        return exc
    if isinstance(exc, pg_errors.DiskFull):
        return StorageFull("The records' disk is full; nothing was kept. Retry later.")
    # Not every error without an SQLSTATE: a wrong number of parameters has
    # none, and is a bug to see, not a 503 to retry.
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, pg_errors.LockNotAvailable,
                        pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.AdminShutdown,
                        pg_errors.QueryCanceled)) or (exc.sqlstate or "").startswith(("08", "53", "57")):
        return Busy("The server's records cannot be reached or are busy; nothing was kept. Retry shortly.")
    return exc
