"""The local-file adapters of the storage ports (the embedded default):
chunk files under `<root>/<recording_id>/<name>` and blobs in one folder.

Durability: a chunk or blob is written to a temporary file in the same
folder, fsync'd, renamed into place, and the folder fsync'd, before `put`
returns (see the package docstring for what a crash can leave).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from ..durable import fsync_path
from ..errors import StorageFull
from . import PROBE_PREFIX, QUARANTINE, TEMP_PREFIX, StoredChunk, read_blocks

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class FileChunkStore:
    """Chunk files under `<root>/<recording_id>/<name>`, written atomically
    and durably (see the module docstring)."""

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
            fsync_path(self.root, directory=True)
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise StorageFull("The server's disk is full; retry later.") from exc
            raise

    def put(self, recording_id: str, name: str, data: bytes) -> None:
        folder = self._folder(recording_id)
        if not folder.is_dir():
            self.prepare(recording_id)
        _write_durably(folder, name, [data])

    def open(self, recording_id: str, name: str) -> BinaryIO:
        return open(self._folder(recording_id) / name, "rb")

    def stat(self, recording_id: str, name: str) -> StoredChunk | None:
        try:
            found = (self._folder(recording_id) / name).stat()
        except FileNotFoundError:
            return None
        return StoredChunk(name, found.st_size, found.st_mtime)

    def delete(self, recording_id: str, name: str) -> None:
        _unlink_quietly(self._folder(recording_id) / name)
        if self._folder(recording_id).is_dir():
            fsync_path(self._folder(recording_id), directory=True)

    def quarantine(self, recording_id: str, name: str) -> None:
        source = self._folder(recording_id) / name
        if not source.exists():
            return
        target = self.root / QUARANTINE / recording_id
        target.mkdir(parents=True, exist_ok=True)
        os.rename(source, target / f"{name}.{time.time_ns()}.{secrets.token_hex(4)}")
        fsync_path(target, directory=True)
        fsync_path(source.parent, directory=True)

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

    # -- ChunkListing

    def recording_ids(self) -> Iterator[str]:
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                yield entry.name

    def list_chunks(self, recording_id: str) -> list[StoredChunk]:
        folder = self._folder(recording_id)
        if not folder.is_dir():
            return []
        found = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(TEMP_PREFIX):
                continue
            stored = self.stat(recording_id, entry.name)  # None if removed meanwhile
            if stored is not None:
                found.append(stored)
        return found

    # -- LocalChunkDisk

    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:  # the folder is gone (unmounted?): probe() says so
            return None

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


class FileBlobStore:
    """Blobs as files `<root>/<name>`, written to a temporary file in the
    same folder, fsync'd and renamed into place, the folder fsync'd."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(self, name: str, blocks: Iterable[bytes]) -> int:
        return _write_durably(self.root, name, blocks)

    def put_file(self, name: str, path: Path) -> int:
        path = Path(path)
        try:
            fsync_path(path)
            os.replace(path, self.root / name)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # Another file system: copy it over, then let the original go.
            size = self.put(name, read_blocks(open(path, "rb")))
            path.unlink()
            return size
        fsync_path(self.root, directory=True)
        return (self.root / name).stat().st_size

    def open(self, name: str, start: int = 0, end: int | None = None) -> BinaryIO:
        stream = open(self.root / name, "rb")
        stream.seek(start)
        if end is None:
            return stream
        return _Bounded(stream, end - start + 1)

    def size(self, name: str) -> int | None:
        try:
            return (self.root / name).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        _unlink_quietly(self.root / name)
        fsync_path(self.root, directory=True)

    def remove_unfinished(self) -> int:
        removed = 0
        for leftover in self.root.glob(f"{TEMP_PREFIX}*"):
            _unlink_quietly(leftover)
            removed += 1
        return removed


class _Bounded:
    """The next `left` bytes of a file, read like a file."""

    def __init__(self, stream: BinaryIO, left: int):
        self._stream, self._left = stream, max(left, 0)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self._left:
            size = self._left
        data = self._stream.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_durably(folder: Path, name: str, blocks: Iterable[bytes]) -> int:
    """Write `blocks` to `folder/name` through a temporary file: fsync,
    rename, fsync the folder. Nothing partial is left on failure."""
    tmp = folder / f"{TEMP_PREFIX}{name}.{secrets.token_hex(6)}"
    size = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for block in blocks:
                view = memoryview(block)
                size += len(view)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, folder / name)
        fsync_path(folder, directory=True)
    except BaseException as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            raise StorageFull("The server's disk is full; keep the chunk and retry later.") from exc
        raise
    return size


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")




def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
