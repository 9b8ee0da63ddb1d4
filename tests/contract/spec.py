"""Opening an adapter from a (name, where) pair, in the test process or in a
child process (`python -m tests.contract.spec increment NAME WHERE N`)."""

from __future__ import annotations

import sys
from pathlib import Path


def open_records(spec: tuple[str, str]):
    from sync.records.postgres import PostgresRecords
    from sync.records.sqlite import SQLiteRecords

    name, where = spec
    return SQLiteRecords(Path(where)) if name == "sqlite" else PostgresRecords(where)


def increment(records, times: int, key: str = "counter") -> None:
    """Read a counter and write it back one higher, `times` times: each a
    read-then-write in one transaction, as the domain's steps are."""
    for _ in range(times):
        with records.transaction() as unit:
            row = unit.one("SELECT value FROM meta WHERE key = ?", [key])
            unit.upsert("meta", {"key": key, "value": str(int(row["value"]) + 1 if row else 1)}, key=["key"])


def open_leader_lock(spec: tuple[str, str]):
    from sync.leader import FileLeaderLock, PostgresLeaderLock

    name, where = spec
    return FileLeaderLock(Path(where)) if name == "flock" else PostgresLeaderLock(where, poll_seconds=0.2)


if __name__ == "__main__":
    command, name, where, *rest = sys.argv[1:]
    if command == "increment":
        increment(open_records((name, where)), int(rest[0]))
    elif command == "commit-then-die":
        import os
        import signal

        with open_records((name, where)).transaction() as unit:
            unit.upsert("meta", {"key": "durable", "value": rest[0]}, key=["key"])
        print("committed", flush=True)  # what an acknowledgement would say
        os.kill(os.getpid(), signal.SIGKILL)
    elif command == "lead":
        import threading
        import time

        lock = open_leader_lock((name, where))
        if lock.acquire(threading.Event()):
            print("leading", flush=True)
            time.sleep(600)
