"""What the cosigner keeps: per log, the latest checkpoint it cosigned.

One file per log, `<data>/logs/<sha256(origin) hex>.checkpoint`, holding
that checkpoint as a signed note: the checkpoint text, the log's signatures
that verified, and this witness's cosignature. Its size and root hash are
read back from the note itself, so there is one copy of the truth.

Why files and not SQLite: the state is one small record per log, replaced
whole; `server/` may not import `sqlite3` (tests/test_layering.py); and a
file written to a temporary name, fsync'd, renamed over the old one and its
folder fsync'd is all-or-nothing across kill -9 and power loss, which is
everything SQLite's `synchronous=FULL` commit would give here.

Compare-and-swap: every change happens under an exclusive `flock` on the
log's `.lock` file, held from reading the held checkpoint to the fsync of
the new one, so two requests racing from the same old size (in any threads
of any gunicorn workers) are serialized and the second sees the first's
result (c2sp.org/tlog-witness's rollback race).

Checkpoints refused as inconsistent although the log signed them may be
proof that the log shows different histories to different people; they are
kept in `<data>/evidence/<origin hash>/<sha256(note) hex>.note`, once each.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from crypto.tlog import Malformed
from crypto.tlog.checkpoint import parse_checkpoint
from crypto.tlog.note import parse_note


def origin_hash(origin: str) -> str:
    """The lowercase hex SHA-256 of a log's origin (tlog-witness's monitoring
    path, and the name of its files here)."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class HeldCheckpoint:
    """The latest checkpoint cosigned for a log, as kept on disk."""

    size: int
    root_hash: bytes
    note: str


class StateDamaged(Exception):
    """A held checkpoint's file cannot be read back as that log's checkpoint.
    Never read as "nothing held": that would let the log roll back."""


class CheckpointStore:
    """The held checkpoints under one data folder."""

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.data_dir = Path(data_dir)
        self._logs = self.data_dir / "logs"
        self._evidence = self.data_dir / "evidence"
        for folder in (self.data_dir, self._logs, self._evidence):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _fsync_folder(self.data_dir)

    def held(self, origin: str) -> HeldCheckpoint | None:
        """The checkpoint held for `origin`, or None if none was ever
        cosigned. Raises `StateDamaged` if its file is not one."""
        path = self._logs / f"{origin_hash(origin)}.checkpoint"
        try:
            note = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateDamaged(f"{path}: {exc}") from exc
        try:
            checkpoint = parse_checkpoint(parse_note(note)[0])
        except Malformed as exc:
            raise StateDamaged(f"{path} is not a signed checkpoint") from exc
        if checkpoint.origin != origin:
            raise StateDamaged(f"{path} holds a checkpoint of {checkpoint.origin!r}, not {origin!r}")
        return HeldCheckpoint(checkpoint.size, checkpoint.root_hash, note)

    @contextlib.contextmanager
    def exclusive(self, origin: str) -> Iterator["LogState"]:
        """The log's state, locked against every other request of every
        process until the block ends."""
        lock_path = self._logs / f"{origin_hash(origin)}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield LogState(self, origin)
        finally:
            os.close(fd)  # releases the lock

    def keep_evidence(self, origin: str, note: str) -> Path:
        """Keep a refused, log-signed checkpoint note (durably, once per
        distinct note); returns its path."""
        folder = self._evidence / origin_hash(origin)
        folder.mkdir(mode=0o700, exist_ok=True)
        data = note.encode("utf-8")
        path = folder / f"{hashlib.sha256(data).hexdigest()}.note"
        if not path.exists():
            _write_durably(path, data)
        return path

    def _replace(self, origin: str, note: str) -> None:
        _write_durably(self._logs / f"{origin_hash(origin)}.checkpoint", note.encode("utf-8"))


class LogState:
    """One log's state while its lock is held (see `CheckpointStore.exclusive`)."""

    def __init__(self, store: CheckpointStore, origin: str) -> None:
        self._store = store
        self.origin = origin
        self.held = store.held(origin)

    def replace(self, note: str) -> None:
        """Make `note` the held checkpoint, durably, before returning."""
        self._store._replace(self.origin, note)
        self.held = self._store.held(self.origin)


def _write_durably(path: Path, data: bytes) -> None:
    # Temporary name, fsync, rename over, fsync the folder: after a crash
    # the file is the old one or the new one, never a mix.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
