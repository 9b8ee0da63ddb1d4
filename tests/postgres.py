"""A throwaway PostgreSQL cluster for tests, from Debian's packages
(`scripts/bootstrap --test` installs `postgresql`; its own cluster is never
started).

`PostgreSQL(root).start()` makes a cluster on a free port, answering on
127.0.0.1 and a unix socket in its own folder; `.url` is a superuser URL,
`.new_database()` a URL of a fresh empty database. PostgreSQL's server
refuses to run as root: as root, its programs run as the `postgres` user
Debian creates, on a folder of its own under /tmp (pytest's folders are
root's, 0700, which that user cannot reach). `root` keeps the server log.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from .support import free_port


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's server programs."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise FileNotFoundError("PostgreSQL's server is not installed: run the tests with scripts/test, which "
                                "installs Debian's postgresql")
    return Path(found[-1]).parent


class PostgreSQL:
    """One throwaway cluster: start, stop (or kill), start again, remove."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.bin = postgres_bin()
        self.port = free_port()
        self.host_dir = Path(tempfile.mkdtemp(prefix="wpg-"))
        self.data_dir = self.host_dir / "data"
        self.log_path = self.root / "postgresql.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.host_dir, user.pw_uid, user.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> "PostgreSQL":
        """Make the cluster (the first time) and start its server; returns self."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.data_dir.exists():
            # C locale: text compares byte by byte, as in SQLite. --no-sync:
            # the cluster's own files need not survive the machine; commits
            # still flush WAL (fsync stays on, as a real server's).
            self._run(str(self.bin / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
                      "--locale=C", "-E", "UTF8", "--no-sync")
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60",
                           "-l", str(self.host_dir / "server.log"),
                           "-o", f"-p {self.port} -k {self.host_dir} -c listen_addresses=127.0.0.1 "
                                 "-c max_connections=200 -c shared_buffers=32MB", "start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start:\n{result.stdout}{result.stderr}\n{self.log()}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" (clean), or "immediate" (as a crash would:
        no checkpoint; recovery replays the WAL at the next start)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", mode, "stop", check=False)
        self._save_log()

    def remove(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop("immediate")
        shutil.rmtree(self.host_dir, ignore_errors=True)

    def new_database(self) -> str:
        """A URL of a new, empty database in this cluster."""
        import psycopg

        name = "w" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name

    def wait_until_up(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _save_log(self) -> None:
        try:
            self.log_path.write_text((self.host_dir / "server.log").read_text(errors="replace"))
        except OSError:
            pass

    def log(self) -> str:
        path = self.host_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


_shared: PostgreSQL | None = None


def shared_cluster() -> PostgreSQL:
    """One cluster for the whole test process, started on first use and
    removed when the process exits (for servers made outside fixtures)."""
    global _shared
    if _shared is None:
        import atexit

        _shared = PostgreSQL(Path(tempfile.mkdtemp(prefix="wpg-logs-"))).start()
        atexit.register(_shared.remove)
    return _shared
