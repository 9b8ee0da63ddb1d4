"""Reassembly: the footage is the decrypted chunks concatenated in index
order, gaps skipped. It is produced on demand, one chunk at a time, so memory
stays flat however long the recording; plaintext is never written to disk."""

from __future__ import annotations

import hashlib
from typing import Iterator

from crypto import InvalidEvidence
from crypto.aead import decrypt_chunk, open_content_key

from ..archive import Archive
from ..errors import NotFound
from .ingest import chunk_file_name
from .reconcile import forget_chunk


class FootageDamaged(Exception):
    """A stored chunk no longer matches its record (disk damage or tampering).
    `recording_id` and `row` name the chunk."""

    def __init__(self, message: str, recording_id: str, row: dict):
        super().__init__(message)
        self.recording_id, self.row = recording_id, row


def iter_chunk_plaintexts(archive: Archive, recording: dict, chunk_rows: list[dict], *,
                          check_hash: bool = True) -> Iterator[tuple[dict, bytes]]:
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
    key = open_content_key(archive.keys.hpke_private, recording["id"], bytes(recording["sealed_key"]))
    for row in chunk_rows:
        name = chunk_file_name(row["idx"], row["ciphertext_sha256"])
        # Only proven damage counts: the file is gone, has another size, or
        # fails its tag or hash. Any other OSError (EMFILE, EIO) may pass, so
        # it is raised as it is and the chunk stays in the records.
        try:
            with archive.chunks.open(recording["id"], name) as stored:
                ciphertext = stored.read()
        except FileNotFoundError:
            ciphertext = None
        intact = ciphertext is not None and len(ciphertext) == row["ciphertext_size"]
        if intact:
            try:
                plaintext = decrypt_chunk(key, recording["id"], row["idx"], ciphertext, final=bool(row["final"]))
                intact = not check_hash or hashlib.sha256(plaintext).hexdigest() == row["sha256"]
            except InvalidEvidence:
                intact = False
        if not intact:
            forget_chunk(archive, recording["id"], row, action="chunk.damaged")
            raise FootageDamaged(f"chunk {row['idx']} of recording {recording['id']} is missing or damaged; "
                                 "it was quarantined and taken out of the records", recording["id"], row)
        yield row, plaintext


def footage_layout(archive: Archive, recording_id: str) -> tuple[dict, list[dict], int]:
    """`(recording, chunk rows, total footage size)` as of now, read
    consistently. Raises `NotFound` for an unknown recording."""
    with archive.database.snapshot() as db:
        recording = next(iter(db.query("SELECT * FROM recordings WHERE id = ?", [recording_id])), None)
        if recording is None:
            raise NotFound("No such recording.")
        rows = list(db.query("SELECT * FROM chunks WHERE recording_id = ? ORDER BY idx", [recording_id]))
    return recording, rows, sum(row["size"] for row in rows)


def iter_footage_range(archive: Archive, recording: dict, rows: list[dict], start: int, end: int) -> Iterator[bytes]:
    """Yield footage bytes `start..end` (inclusive), decrypting only the
    chunks that overlap the range, one at a time."""
    offset, wanted = 0, []
    for row in rows:
        if offset + row["size"] > start and offset <= end:
            wanted.append((offset, row))
        offset += row["size"]
    offsets = {row["idx"]: first for first, row in wanted}
    for row, plaintext in iter_chunk_plaintexts(archive, recording, [row for _, row in wanted], check_hash=False):
        first = offsets[row["idx"]]
        lo, hi = max(start - first, 0), min(end - first + 1, row["size"])
        yield plaintext[lo:hi]
