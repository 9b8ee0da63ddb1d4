"""What operators ask the server about itself: is it ready to take footage
(`readiness`: records and chunk store writable, disk above the watermark of
sync/disk.py, a scheduler leader), and the numbers a metrics scrape computes from the
records (`archive_numbers`).

Nothing here says anything about who uses the server: no address, no
device, no name. Readiness answers name a failing check, never the reason's
details (paths, error messages), which go to the log instead.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..archive import Archive
from .disk import below_watermark, disk_free_bytes
from .finalize import finalization_lag_seconds

log = logging.getLogger("witness.health")

# The checks of `readiness`, in the order they are run and shown.
CHECKS = ("records", "chunk_store", "disk", "scheduler")


class _RolledBack(Exception):
    """Raised inside the probe transaction so that it rolls back."""


def leader_present(archive: Archive) -> bool:
    """Whether some process holds the scheduler's leader lock
    (sync/scheduler.py), asked without disturbing it (sync/leader.py)."""
    return archive.leader_lock().someone_leads()


def _check_records(archive: Archive) -> bool:
    # The write path an upload takes (the records' writer lock, a row
    # changed), rolled back: nothing is written.
    try:
        with archive.database.transaction() as db:
            db.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
            raise _RolledBack()
    except _RolledBack:
        return True


def _check_chunk_store(archive: Archive) -> bool:
    archive.chunks.probe()
    return True


def _check_disk(archive: Archive) -> bool:
    return not below_watermark(archive)


def _check_scheduler(archive: Archive) -> bool:
    return leader_present(archive)


_CHECK_FUNCTIONS: dict[str, Callable[[Archive], bool]] = {
    "records": _check_records,
    "chunk_store": _check_chunk_store,
    "disk": _check_disk,
    "scheduler": _check_scheduler,
}
FAILURE_WORDS = {
    "records": "the records cannot be written",
    "chunk_store": "the chunk store cannot be written",
    "disk": "free disk space is below the watermark (WITNESS_MIN_FREE_BYTES): new recordings are refused",
    "scheduler": "no process runs the background jobs (finalization, copy builds)",
}


@dataclass(frozen=True)
class Readiness:
    """The outcome of every check: name -> "ok" or "failing"."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(value == "ok" for value in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, value in self.checks.items() if value != "ok"]

    def message(self) -> str:
        if self.ready:
            return "Ready."
        return "Not ready: " + "; ".join(f"{name}: {FAILURE_WORDS[name]}" for name in self.failing) + "."


def readiness(archive: Archive) -> Readiness:
    """Run every check; a check that raises is failing (and logged)."""
    checks = {}
    for name in CHECKS:
        try:
            checks[name] = "ok" if _CHECK_FUNCTIONS[name](archive) else "failing"
        except Exception as exc:  # any failure of a check is the answer, not an error
            log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            checks[name] = "failing"
    return Readiness(checks)


class ReadinessProbe:
    """`readiness`, run at most once per `max_age_seconds` in this process:
    /readyz needs no authentication, and every run takes the records' write
    lock, so a flood of probes must not queue behind (or ahead of) uploads.
    Callers arriving while a check runs wait for it and share its answer."""

    def __init__(self, archive: Archive, *, max_age_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.archive, self.max_age_seconds, self._clock = archive, max_age_seconds, clock
        self._lock = threading.Lock()
        self._last: tuple[float, Readiness] | None = None

    def __call__(self) -> Readiness:
        with self._lock:
            if self._last is not None and self._clock() - self._last[0] < self.max_age_seconds:
                return self._last[1]
            result = readiness(self.archive)
            self._last = (self._clock(), result)
            return result


@dataclass(frozen=True)
class ArchiveNumbers:
    """What a metrics scrape reads from the records and the disk."""

    disk_free_bytes: int
    min_free_bytes: int
    recordings_receiving: int
    finalization_lag_seconds: float
    copy_builds_queued: int
    copy_builds_running: int
    scheduler_leader_present: bool


def archive_numbers(archive: Archive) -> ArchiveNumbers:
    """The numbers of `ArchiveNumbers`, computed now (a few indexed counts)."""
    with archive.database.snapshot() as db:
        receiving = next(iter(db.query("SELECT COUNT(*) AS n FROM recordings WHERE state = 'receiving'")))["n"]
        copies = {row["state"]: row["n"] for row in db.query(
            "SELECT state, COUNT(*) AS n FROM copy_requests WHERE state IN ('approved', 'building') GROUP BY state")}
    return ArchiveNumbers(
        disk_free_bytes=disk_free_bytes(archive),
        min_free_bytes=archive.settings.min_free_bytes,
        recordings_receiving=receiving,
        finalization_lag_seconds=finalization_lag_seconds(archive),
        copy_builds_queued=copies.get("approved", 0),
        copy_builds_running=copies.get("building", 0),
        scheduler_leader_present=leader_present(archive),
    )
