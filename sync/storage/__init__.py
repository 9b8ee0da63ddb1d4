"""Where chunk bytes and copy bundles live: the ports the domain owns, and
their adapters: local files (`files.py`, the embedded default) and S3
(`s3.py`); `sync/archive.py` chooses between them from the settings.

Ports:
- `ChunkStore`: chunks exactly as received (still encrypted), by recording
  and name: `put`, `open` (streaming read), `stat` (exists, with size and
  age), `delete`, and two chores every adapter can do: `quarantine` (keep a
  damaged chunk's bytes apart, then remove it) and `probe` (could a chunk be
  written now?).
- `ChunkListing`, optional: what is stored (recording ids, each one's
  chunks with size and age). Only reconciliation lists.
- `LocalChunkDisk`, optional: file-system chores that only a store on a
  disk of its own has: making a recording's folder durable before its first
  chunk, free space (the watermark), unfinished temporary files.
- `BlobStore`: large files (copy bundles), written from a stream without
  holding them in memory, read back by byte range.

Absence is `FileNotFoundError` (from `open`) or `None` (from `stat`, `size`);
a full disk is `StorageFull`; a store that cannot be reached or fails is
`StoreUnavailable`. Names are chosen by the domain and are safe (digits, hex,
dots and dashes): stores need not validate them.

Durability of the file adapters: a chunk or blob is written to a temporary
file in the same folder, fsync'd, renamed into place, and the folder
fsync'd, before `put` returns. A crash at any point leaves either no file, a
temporary file, or a whole file with no record yet; reconciliation
(`sync/domain/reconcile.py`) removes the latter two, and a bundle build's leftovers are
removed when the next leader takes over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Protocol, runtime_checkable


TEMP_PREFIX = ".tmp-"
PROBE_PREFIX = ".probe-"
QUARANTINE = ".quarantine"
BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as the store holds it: its name, size in bytes, and when it
    was stored (epoch seconds, the store's own clock)."""

    name: str
    size: int
    stored_at: float


class ChunkStore(Protocol):
    """Where chunk bytes live (see the module docstring)."""

    def put(self, recording_id: str, name: str, data: bytes) -> None:
        """Store `data` durably under `name` before returning. Names are
        index and content hash, so storing the same name again stores the
        same bytes: an adapter may keep the first copy. Raises
        `StorageFull` or `StoreUnavailable`, having kept nothing partial."""

    def open(self, recording_id: str, name: str) -> BinaryIO:
        """A stored chunk to read (and close); `FileNotFoundError` if absent,
        `StoreUnavailable` if the store cannot be read now."""

    def stat(self, recording_id: str, name: str) -> StoredChunk | None:
        """Size and age of a stored chunk, or None if absent."""

    def delete(self, recording_id: str, name: str) -> None:
        """Remove a stored chunk if present."""

    def quarantine(self, recording_id: str, name: str) -> None:
        """Keep a damaged chunk's bytes apart for examination (never served,
        never listed), then remove it from the recording; nothing happens if
        it is absent."""

    def probe(self) -> None:
        """Check that a chunk could be written now: write and remove a small
        object of its own, never taken for a chunk. Raises `OSError`,
        `StorageFull` or `StoreUnavailable` if not."""


@runtime_checkable
class ChunkListing(Protocol):
    """What a store holds, for reconciliation only."""

    def recording_ids(self) -> Iterator[str]:
        """Recordings that have at least one stored chunk (or a folder)."""

    def list_chunks(self, recording_id: str) -> list[StoredChunk]:
        """The finished chunks stored for a recording, by name."""


@runtime_checkable
class LocalChunkDisk(Protocol):
    """Chores of a store that writes to a disk of its own."""

    def prepare(self, recording_id: str) -> None:
        """Make a recording's place durably before its first chunk arrives."""

    def free_bytes(self) -> int | None:
        """Bytes still free where chunks are written; None if unknown."""

    def remove_stale_temporaries(self, older_than_seconds: float) -> int:
        """Delete unfinished writes older than the given age; return how many."""


class BlobStore(Protocol):
    """Large files (copy bundles) by name."""

    def put(self, name: str, blocks: Iterable[bytes]) -> int:
        """Store the concatenated `blocks` durably under `name` (replacing
        any blob of that name), holding at most a few MiB in memory; return
        the size. Nothing partial is ever visible under `name`. Raises
        `StorageFull` or `StoreUnavailable`."""

    def put_file(self, name: str, path: Path) -> int:
        """Store a finished local file under `name` as `put` does; the file
        is consumed (moved or removed). Returns the size."""

    def open(self, name: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """Bytes `start..end` (inclusive; `end` None: to the last) of a
        stored blob, to read in blocks and close. `FileNotFoundError` if
        absent, `StoreUnavailable` if the store cannot be read now."""

    def size(self, name: str) -> int | None:
        """Size in bytes of a stored blob, or None if absent."""

    def delete(self, name: str) -> None:
        """Remove a stored blob if present."""

    def remove_unfinished(self) -> int:
        """Discard writes that a process which died left unfinished (only
        safe when no write is running); return how many."""


def read_blocks(stream: BinaryIO, block: int = BLOCK_BYTES) -> Iterator[bytes]:
    """`stream`'s bytes, `block` at a time, closing it at the end."""
    with stream:
        while data := stream.read(block):
            yield data
