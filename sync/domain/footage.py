"""Reassembly: the footage is the decrypted chunks concatenated in index
order, gaps skipped. It is produced on demand, one chunk at a time, so memory
stays flat however long the recording; plaintext is never written to disk."""

from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

from crypto import InvalidEvidence
from crypto.aead import decrypt_chunk, open_content_key

from ..archive import Archive
from ..errors import NotFound
from ..records.rows import Chunk, Recording
from .ingest import chunk_file_name
from .reconcile import forget_chunk

T = TypeVar("T")


class FootageDamaged(Exception):
    """A stored chunk no longer matches its record (disk damage or tampering).
    `recording_id` and `row` name the chunk."""

    def __init__(self, message: str, recording_id: str, row: Chunk):
        super().__init__(message)
        self.recording_id, self.row = recording_id, row


def iter_chunk_plaintexts(archive: Archive, recording: Recording, chunk_rows: Iterable[Chunk], *,
                          check_hash: bool = True) -> Iterator[tuple[Chunk, bytes]]:
    """Yield `(row, plaintext)` for each chunk row in the order given, reading
    and decrypting one chunk at a time.

    Raises `FootageDamaged` when a file is missing, fails its AEAD tag, or
    (with `check_hash`, as finalization, which signs what it reads, asks)
    decrypts to other bytes than recorded. The tag alone already proves the
    bytes are the ones the phone sealed: changing them undetected needs the
    content key, which opens only with the server's private key. So reads
    for staff and bundles skip the second hash. Either way, after taking that chunk out of
    the records (file quarantined, hashes audited), so bytes that no longer
    match their receipt are never served or signed, status shows the chunk
    missing for the phone to re-send, and the next manifest lists the gap."""
    key = open_content_key(archive.keys.hpke_private, recording.id, recording.sealed_key)
    for row in chunk_rows:
        name = chunk_file_name(row.idx, row.ciphertext_sha256)
        # Only proven damage counts: the file is gone, has another size, or
        # fails its tag or hash. Any other OSError (EMFILE, EIO) may pass, so
        # it is raised as it is and the chunk stays in the records.
        try:
            with archive.chunks.open(recording.id, name) as stored:
                ciphertext = stored.read()
        except FileNotFoundError:
            ciphertext = None
        intact = ciphertext is not None and len(ciphertext) == row.ciphertext_size
        if intact:
            try:
                plaintext = decrypt_chunk(key, recording.id, row.idx, ciphertext, final=bool(row.final))
                intact = not check_hash or hashlib.sha256(plaintext).hexdigest() == row.sha256
            except InvalidEvidence:
                intact = False
        if not intact:
            forget_chunk(archive, recording.id, row, action="chunk.damaged")
            raise FootageDamaged(f"chunk {row.idx} of recording {recording.id} is missing or damaged; "
                                 "it was quarantined and taken out of the records", recording.id, row)
        yield row, plaintext


@dataclass(frozen=True)
class FootageSlice:
    """Bytes `start..end` (inclusive) of a recording's footage as held at one
    moment, `size` bytes in all (`end < start` when the footage is empty):
    the chunks that overlap the range, each with its offset in the footage."""

    recording: Recording
    size: int
    start: int
    end: int
    pieces: tuple[tuple[int, Chunk], ...]


# Each chunk with the footage offset of its first byte (the sizes of the held
# chunks before it), and only those overlapping :start..:end: the database
# sums, Python sees the rows it sends (a range of an hour-long recording
# reads one or two rows, not 3,600).
_OVERLAPPING = """SELECT * FROM (
        SELECT c.*, SUM(c.size) OVER (ORDER BY c.idx ROWS UNBOUNDED PRECEDING) - c.size AS footage_offset
        FROM chunks c WHERE c.recording_id = :id) AS laid
    WHERE footage_offset <= :end AND footage_offset + size > :start ORDER BY idx"""


def footage_slice(archive: Archive, recording_id: str,
                  choose: Callable[[Recording, int], tuple[int, int]] | None = None) -> FootageSlice:
    """The part of a recording's footage `choose(recording, size)` picks, as
    `(start, end)` inclusive (default: all of it), read in one snapshot so
    the size, the chosen range and the chunks agree even while chunks
    arrive. `choose` may raise (a range past the end, another organisation's
    recording); nothing is read after it. Raises `NotFound` for an unknown
    recording."""
    with archive.database.snapshot() as db:
        recording = db.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ?", [recording_id])
        if recording is None:
            raise NotFound("No such recording.")
        size = recording.footage_size or 0
        start, end = choose(recording, size) if choose is not None else (0, size - 1)
        rows = db.query(_OVERLAPPING, {"id": recording_id, "start": start, "end": end}) if end >= start else []
    return FootageSlice(recording, size, start, end,
                        tuple((row["footage_offset"], Chunk.of(row)) for row in rows))


def iter_footage(archive: Archive, part: FootageSlice) -> Iterator[bytes]:
    """Yield the slice's bytes, decrypting only the chunks it overlaps, the
    next ones while the caller sends the one before (`read_ahead`). Raises
    `FootageDamaged` (see `iter_chunk_plaintexts`)."""
    offsets = {row.idx: first for first, row in part.pieces}
    chunks = (row for _, row in part.pieces)
    pieces = iter_chunk_plaintexts(archive, part.recording, chunks, check_hash=False)
    for row, plaintext in (read_ahead(pieces) if len(part.pieces) > 1 else pieces):
        first = offsets[row.idx]
        lo, hi = max(part.start - first, 0), min(part.end - first + 1, row.size)
        yield plaintext if (lo, hi) == (0, len(plaintext)) else plaintext[lo:hi]


def read_ahead(items: Iterator[T], depth: int = 3) -> Iterator[T]:
    """Yield what `items` yields, with up to `depth` items made ahead in a
    thread of its own: chunks are read and decrypted (both release the GIL)
    while the caller hashes, writes or sends the ones before, so two cores
    share the work. An exception from `items` is raised here, in order.
    Closing this iterator early (a viewer who stops watching) stops the
    thread before its next item; memory stays at `depth` items. Only
    blocking hand-overs, no timed waits: nothing here depends on the clock."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                ready.put((item, None))
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put((end, exc))
            return
        ready.put((end, None))

    producer = threading.Thread(target=produce, name="footage-read-ahead", daemon=True)
    producer.start()
    finished = False
    try:
        while True:
            item, error = ready.get()
            if item is end:
                finished = True
                if error is not None:
                    raise error
                return
            yield item
    finally:
        if not finished:
            # Stopped early: let the producer finish the item it is on and
            # see the stop, taking whatever it hands over until its end.
            stop.set()
            while ready.get()[0] is not end:
                pass
        producer.join()
