"""The leader-lock port: which one process, of every worker on every node,
runs the background jobs (sync/scheduler.py).

A `LeaderLock` is competed for by every process; `acquire(stop)` blocks
until this process holds it (True) or `stop` is set (False). The holder
keeps it until `release()` or until it dies: the lock must then be freed
without anyone's help, so a killed leader is replaced. `holds()` says
whether it is still held; the leader asks it now and then and steps down
when it is not (a database connection lost and the lock with it).

Adapters: `FileLeaderLock`, an exclusive `flock` on `<data>/scheduler.lock`
(the kernel frees it when the holder dies; processes of one machine only),
and `PostgresLeaderLock`, a session advisory lock held on a connection of
its own (PostgreSQL frees it when that session ends: the process's death
closes it at once, a node cut off is noticed by TCP keepalives within about
half a minute). `open_leader_lock` chooses one; nothing else does.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
from pathlib import Path
from typing import Protocol

LOCK_FILE = "scheduler.lock"
# Any constant works if every node uses the same; distinct from the records'
# writer lock (sync/records/postgres.py).
LEADER_LOCK_KEY = 0x5749544E45535302


class LeaderLock(Protocol):
    def acquire(self, stop: threading.Event) -> bool:
        """Block until this process leads (True) or `stop` is set (False)."""

    def holds(self) -> bool:
        """Whether this process still holds the lock."""

    def release(self) -> None:
        """Give the lock up (another process may take it at once)."""

    def someone_leads(self) -> bool:
        """Whether any process holds the lock (this one included), asked
        without disturbing the holder or the candidates."""


def open_leader_lock(data_dir: Path, database_url: str | None = None) -> LeaderLock:
    """The lock `WITNESS_DATABASE_URL` implies: a PostgreSQL advisory lock
    beside PostgreSQL records (several nodes share it), else a `flock` in
    the data folder."""
    if database_url:
        return PostgresLeaderLock(database_url)
    return FileLeaderLock(Path(data_dir) / LOCK_FILE)


class FileLeaderLock:
    """An exclusive `flock`; the holder's process id is written into the file
    for operators (`cat <data>/scheduler.lock`)."""

    def __init__(self, path: Path, *, poll_seconds: float = 0.2):
        self.path = Path(path)
        self.poll_seconds = poll_seconds
        self._fd: int | None = None

    def acquire(self, stop: threading.Event) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        # Tried, not waited on, so that `stop` is heard: a blocked flock
        # cannot be interrupted. The kernel frees the lock when its holder dies.
        while True:
            if stop.is_set():
                os.close(fd)
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                stop.wait(self.poll_seconds)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def holds(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def someone_leads(self) -> bool:
        # A shared, non-blocking flock on a descriptor of our own fails while
        # the leader holds its exclusive lock (even when the leader is this
        # very process: flock locks belong to open file descriptions). If
        # nobody leads, the shared lock is taken and let go at once; a
        # process waiting to lead just waits that much longer.
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False  # no process ever competed to lead
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)


class PostgresLeaderLock:
    """`pg_try_advisory_lock` on a dedicated connection, tried every
    `poll_seconds`; the connection's `application_name` names the holder
    (`SELECT application_name FROM pg_stat_activity`)."""

    def __init__(self, url: str, *, poll_seconds: float = 1.0):
        self.url = url
        self.poll_seconds = poll_seconds
        self._conn = None
        self._leading = False
        self._guard = threading.Lock()

    def _connect(self):
        import psycopg  # loaded only beside PostgreSQL records

        return psycopg.connect(
            self.url, autocommit=True, connect_timeout=5,
            application_name=f"witness-sync leader candidate pid {os.getpid()} on {socket.gethostname()}"[:63],
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)

    def acquire(self, stop: threading.Event) -> bool:
        import psycopg

        while not stop.is_set():
            try:
                with self._guard:
                    if self._conn is None or self._conn.closed:
                        self._conn = self._connect()
                    won = self._conn.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK_KEY]).fetchone()[0]
                    if won:
                        self._conn.execute(
                            "SELECT set_config('application_name', %s, false)",
                            [f"witness-sync leader pid {os.getpid()} on {socket.gethostname()}"[:63]])
                        self._leading = True
                        return True
            except psycopg.Error:
                self._drop()  # the database is unreachable: try again later
            stop.wait(self.poll_seconds)
        self._drop()
        return False

    def holds(self) -> bool:
        import psycopg

        with self._guard:
            if not self._leading or self._conn is None or self._conn.closed:
                return False
            try:
                self._conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                self._drop_locked()
                return False

    def release(self) -> None:
        self._drop()

    def someone_leads(self) -> bool:
        """Raises `Busy` when the database cannot be reached."""
        import psycopg

        from .errors import Busy

        # An advisory lock on a bigint key shows in pg_locks as its high and
        # low 32 bits (classid, objid) with objsubid 1.
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                return conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1)",
                    [LEADER_LOCK_KEY >> 32, LEADER_LOCK_KEY & 0xFFFFFFFF]).fetchone()[0]
        except psycopg.Error as exc:
            raise Busy("The records' database cannot be reached to see who leads.") from exc

    def _drop(self) -> None:
        with self._guard:
            self._drop_locked()

    def _drop_locked(self) -> None:
        self._leading = False
        if self._conn is not None:
            try:
                self._conn.close()  # ending the session frees the lock
            except Exception:
                pass
            self._conn = None
