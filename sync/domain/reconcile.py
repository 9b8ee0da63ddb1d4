"""Reconciliation of stored chunks with their records (at a leader's
take-over and every hour), through the store's listing capability.

The write order (object stored, then row committed) means a crash can leave:
- a temporary file (the write never finished; files only): removed;
- a whole object with no row (crash between store and commit, or a
  clean-up that could not run): removed — it was never acknowledged;
- a row whose object is gone or has the wrong size (disk damage or someone
  deleting files): the row is removed so the chunk shows as missing and the
  phone re-sends it, the loss is written to the audit log, and a damaged
  object is kept in quarantine.

Other processes may be uploading while this runs, so objects younger than a
grace period are left alone, and every removal is announced in the records
first (sync/ingest.py), so an upload in flight is never mistaken for debris
nor left committed without its object. Finished removal announcements older
than a day are forgotten here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from ..archive import Archive
from ..records.rows import Chunk
from ..storage import ChunkListing, LocalChunkDisk
from ..timefmt import format_time
from . import audit
from .ingest import announce_removals, carry_out_removals, chunk_file_name, discard_unheld_chunks

# Removal announcements are kept this long: longer than any upload can take
# between noting the newest announcement and committing (sync/ingest.py).
REMOVALS_KEPT = timedelta(days=1)

GRACE_SECONDS = 120.0


@dataclass
class ReconcileReport:
    """What one reconciliation pass removed."""

    temporaries_removed: int = 0
    orphan_files_removed: list[tuple[str, str]] = field(default_factory=list)
    lost_chunks: list[tuple[str, int]] = field(default_factory=list)


def reconcile_storage(archive: Archive, *, grace_seconds: float = GRACE_SECONDS) -> ReconcileReport:
    """Make stored chunks and chunk rows agree (see the module docstring) and
    return what was removed. A store without the listing capability only
    has its rows checked. Raises `OSError` or `StoreUnavailable` if the
    store cannot be read."""
    report = ReconcileReport()
    store = archive.chunks
    if isinstance(store, LocalChunkDisk):
        report.temporaries_removed = store.remove_stale_temporaries(grace_seconds)
    listing = store if isinstance(store, ChunkListing) else None
    now_epoch = archive.clock().timestamp()
    stored_ids = set(listing.recording_ids()) if listing else set()
    recorded_ids = {row["recording_id"] for row in archive.database.query("SELECT DISTINCT recording_id FROM chunks")}
    for recording_id in sorted(stored_ids | recorded_ids):
        # Rows first, then the store: a row committed before this read has
        # its object already, so it cannot be taken for lost.
        rows = archive.database.fetch(Chunk, "SELECT * FROM chunks WHERE recording_id = ?", [recording_id])
        expected = {chunk_file_name(r.idx, r.ciphertext_sha256): r for r in rows}
        if listing:
            present = {stored.name: stored for stored in listing.list_chunks(recording_id)}
        else:
            present = {name: stored for name in expected if (stored := store.stat(recording_id, name))}
        orphans = [name for name, stored in sorted(present.items())
                   if name not in expected and now_epoch - stored.stored_at >= grace_seconds]
        # Re-checked against the rows, and announced, before the store is
        # asked: a phone's retry may be storing the very same name right now.
        for name in discard_unheld_chunks(archive, recording_id, orphans):
            report.orphan_files_removed.append((recording_id, name))
        for name, row in sorted(expected.items()):
            stored = present.get(name)
            if stored is None or stored.size != row.ciphertext_size:
                forget_chunk(archive, recording_id, row, action="chunk.lost")
                report.lost_chunks.append((recording_id, row.idx))
    forget_old_removals(archive)
    return report


def forget_old_removals(archive: Archive) -> int:
    """Drop removal announcements older than `REMOVALS_KEPT`; return how many."""
    cutoff = format_time(archive.clock() - REMOVALS_KEPT)
    with archive.database.transaction() as db:
        return db.execute("DELETE FROM chunk_removals WHERE announced_at < ?", [cutoff]).rowcount


def forget_chunk(archive: Archive, recording_id: str, row: Chunk, *, action: str) -> bool:
    """Take a chunk whose stored bytes are gone or damaged out of the records,
    so status shows it missing (the phone re-sends it) and the next manifest
    lists the gap. Damaged bytes are moved to quarantine rather than
    deleted, once the records are committed (if the store fails then, they
    stay in place, unheld, and a later reconciliation removes them); the
    record's hashes go into the audit log as `action`. Returns False if the
    record had already changed (forgotten or re-sent) and nothing was done."""
    name = chunk_file_name(row.idx, row.ciphertext_sha256)
    with archive.database.transaction() as db:
        still = next(iter(db.query("SELECT 1 FROM chunks WHERE recording_id = ? AND idx = ? AND ciphertext_sha256 = ?",
                                   [recording_id, row.idx, row.ciphertext_sha256])), None)
        if still is None:
            return False
        # The store is asked after the commit; meanwhile a re-send of these
        # bytes is refused (sync/ingest.py), so the quarantine cannot take
        # away a copy that was sent again and acknowledged.
        announced = announce_removals(db, archive, recording_id, [name])
        now = archive.now()
        db.execute("DELETE FROM chunks WHERE recording_id = ? AND idx = ? AND ciphertext_sha256 = ?",
                   [recording_id, row.idx, row.ciphertext_sha256])
        # A new generation makes the recording due for a manifest that shows the gap.
        db.execute("""UPDATE recordings SET generation = generation + 1, last_activity_at = :now,
                          final_index = CASE WHEN final_index = :idx THEN NULL ELSE final_index END,
                          chunk_count = chunk_count - 1, footage_size = footage_size - :size,
                          max_index = (SELECT MAX(idx) FROM chunks WHERE recording_id = :id)
                      WHERE id = :id""",
                   {"now": now, "idx": row.idx, "size": row.size, "id": recording_id})
        audit.append_entry(db, at=now, actor="system", action=action, recording_id=recording_id,
                           detail={"index": row.idx, "ciphertext_sha256": row.ciphertext_sha256})
    carry_out_removals(archive, recording_id, announced, archive.chunks.quarantine)
    return True
