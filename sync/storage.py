"""Chunk bytes, stored exactly as received (still encrypted), one file each.

`ChunkStore` is the interface the domain uses; `FileChunkStore` keeps chunks
under `<data>/chunks/<recording_id>/`. An S3-compatible blob store can replace
it by implementing the same five methods.

Durability: a chunk is written to a temporary file in the same folder,
fsync'd, renamed into place, and the folder fsync'd, before `put` returns. A
crash at any point leaves either no file, a temporary file, or a whole file
with no record yet; start-up reconciliation (`reconcile.py`) removes the
latter two.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from .errors import StorageFull

TEMP_PREFIX = ".tmp-"
PROBE_PREFIX = ".probe-"
QUARANTINE = ".quarantine"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class ChunkStore(Protocol):
    """Where chunk bytes live. Names are chosen by the domain and are safe
    (digits, hex and a dash): stores need not validate them."""

    def put(self, recording_id: str, name: str, data: bytes) -> None:
        """Store `data` durably under `name`; raise `StorageFull` if no room."""

    def open(self, recording_id: str, name: str) -> BinaryIO:
        """Open a stored chunk for reading; raise `FileNotFoundError` if absent."""

    def delete(self, recording_id: str, name: str) -> None:
        """Remove a stored chunk if present."""

    def names(self, recording_id: str) -> list[str]:
        """Names of the finished chunks stored for a recording."""

    def recording_ids(self) -> Iterator[str]:
        """Recordings that have a folder in the store."""

    def remove_stale_temporaries(self, older_than_seconds: float) -> int:
        """Delete unfinished writes older than the given age; return how many."""

    def size(self, recording_id: str, name: str) -> int:
        """Size in bytes of a stored chunk; `FileNotFoundError` if absent."""

    def holds(self, recording_id: str, name: str, size: int) -> bool:
        """True if a whole chunk of that name and size is stored."""

    def prepare(self, recording_id: str) -> None:
        """Make a recording's place durably before its first chunk arrives."""

    def quarantine(self, recording_id: str, name: str) -> None:
        """Move a damaged chunk out of the recording, keeping its bytes for
        examination; nothing happens if it is absent."""

    def mtime(self, recording_id: str, name: str) -> float:
        """When a stored chunk was written (epoch seconds); inf if absent."""

    def probe(self) -> None:
        """Check that a chunk could be written now: write and remove a small
        object of its own. Raises `OSError` (or `StorageFull`) if not."""

    def free_bytes(self) -> int | None:
        """Bytes still free where chunks are written; None if unknown (a
        store with no disk of its own)."""


class FileChunkStore:
    """Chunk files on the local file system, written atomically and durably."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _folder(self, recording_id: str) -> Path:
        return self.root / recording_id

    def prepare(self, recording_id: str) -> None:
        # Made when the recording is created, so that no worker acknowledges
        # a chunk in a folder whose own entry is not yet durable.
        try:
            self._folder(recording_id).mkdir(exist_ok=True)
            _fsync_dir(self.root)
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise StorageFull("The server's disk is full; retry later.") from exc
            raise

    def holds(self, recording_id: str, name: str, size: int) -> bool:
        try:
            return self.size(recording_id, name) == size
        except FileNotFoundError:
            return False

    def put(self, recording_id: str, name: str, data: bytes) -> None:
        folder = self._folder(recording_id)
        tmp = folder / f"{TEMP_PREFIX}{name}.{secrets.token_hex(6)}"
        try:
            if not folder.is_dir():
                self.prepare(recording_id)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, folder / name)
            _fsync_dir(folder)
        except OSError as exc:
            _unlink_quietly(tmp)
            if exc.errno in _FULL_ERRNOS:
                raise StorageFull("The server's disk is full; keep the chunk and retry later.") from exc
            raise

    def open(self, recording_id: str, name: str) -> BinaryIO:
        return open(self._folder(recording_id) / name, "rb")

    def size(self, recording_id: str, name: str) -> int:
        return (self._folder(recording_id) / name).stat().st_size

    def delete(self, recording_id: str, name: str) -> None:
        _unlink_quietly(self._folder(recording_id) / name)
        if self._folder(recording_id).is_dir():
            _fsync_dir(self._folder(recording_id))

    def quarantine(self, recording_id: str, name: str) -> None:
        source = self._folder(recording_id) / name
        if not source.exists():
            return
        target = self.root / QUARANTINE / recording_id
        target.mkdir(parents=True, exist_ok=True)
        os.rename(source, target / f"{name}.{time.time_ns()}.{secrets.token_hex(4)}")
        _fsync_dir(target)
        _fsync_dir(source.parent)

    def names(self, recording_id: str) -> list[str]:
        folder = self._folder(recording_id)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(TEMP_PREFIX))

    def recording_ids(self) -> Iterator[str]:
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                yield entry.name

    def remove_stale_temporaries(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        for folder in self.root.iterdir():
            if not folder.is_dir() or folder.name == QUARANTINE:
                continue
            for entry in folder.iterdir():
                if entry.name.startswith(TEMP_PREFIX) and _mtime(entry) < cutoff:
                    _unlink_quietly(entry)
                    removed += 1
        return removed

    def mtime(self, recording_id: str, name: str) -> float:
        """Modification time of a stored chunk (for reconciliation's grace period)."""
        return _mtime(self._folder(recording_id) / name)

    def probe(self) -> None:
        # Beside the recordings' folders (never inside one, so it can never
        # be taken for a chunk), made and removed at once.
        path = self.root / f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"probe")
            finally:
                os.close(fd)
        except OSError as exc:
            _unlink_quietly(path)
            if exc.errno in _FULL_ERRNOS:
                raise StorageFull("The server's disk is full.") from exc
            raise
        os.unlink(path)

    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:  # the folder is gone (unmounted?): probe() says so
            return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
