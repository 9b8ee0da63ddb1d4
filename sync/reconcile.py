"""Start-up reconciliation of chunk files with their records.

The write order (file durable, then row committed) means a crash can leave:
- a temporary file (the write never finished): removed;
- a whole file with no row (crash between rename and commit, or a check that
  failed after the write): removed — it was never acknowledged;
- a row whose file is gone or has the wrong size (disk damage or someone
  deleting files): the row is removed so the chunk shows as missing and the
  phone re-sends it, the loss is written to the audit log, and a damaged
  file is kept in quarantine.

Other processes may be uploading while this runs, so files younger than a
grace period are left alone: an upload in flight is never mistaken for debris.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import audit
from .archive import Archive
from .ingest import chunk_file_name, discard_unheld_chunk_file

GRACE_SECONDS = 120.0


@dataclass
class ReconcileReport:
    """What one reconciliation pass removed."""

    temporaries_removed: int = 0
    orphan_files_removed: list[tuple[str, str]] = field(default_factory=list)
    lost_chunks: list[tuple[str, int]] = field(default_factory=list)


def reconcile_storage(archive: Archive, *, grace_seconds: float = GRACE_SECONDS) -> ReconcileReport:
    """Make chunk files and chunk rows agree (see the module docstring) and
    return what was removed. Raises `OSError` if the store cannot be read."""
    report = ReconcileReport()
    report.temporaries_removed = archive.chunks.remove_stale_temporaries(grace_seconds)
    now_epoch = archive.clock().timestamp()
    stored_ids = set(archive.chunks.recording_ids())
    recorded_ids = {row["recording_id"] for row in archive.database.query("SELECT DISTINCT recording_id FROM chunks")}
    for recording_id in sorted(stored_ids | recorded_ids):
        rows = archive.database.query("SELECT idx, size, ciphertext_sha256, ciphertext_size FROM chunks "
                                      "WHERE recording_id = ?", [recording_id])
        expected = {chunk_file_name(r["idx"], r["ciphertext_sha256"]): r for r in rows}
        present = set(archive.chunks.names(recording_id))
        for name in sorted(present - expected.keys()):
            if now_epoch - archive.chunks.mtime(recording_id, name) < grace_seconds:
                continue
            # Re-checked and deleted under the writer lock: a phone's retry may
            # be renaming the very same name into place right now.
            if discard_unheld_chunk_file(archive, recording_id, name):
                report.orphan_files_removed.append((recording_id, name))
        for name, row in sorted(expected.items()):
            try:
                intact = archive.chunks.size(recording_id, name) == row["ciphertext_size"]
            except FileNotFoundError:
                intact = False
            if not intact:
                forget_chunk(archive, recording_id, row, action="chunk.lost")
                report.lost_chunks.append((recording_id, row["idx"]))
    return report


def forget_chunk(archive: Archive, recording_id: str, row: dict, *, action: str) -> bool:
    """Take a chunk whose stored bytes are gone or damaged out of the records,
    so status shows it missing (the phone re-sends it) and the next manifest
    lists the gap. Damaged bytes are moved to quarantine, never deleted; the
    record's hashes go into the audit log as `action`. Returns False if the
    record had already changed (forgotten or re-sent) and nothing was done."""
    name = chunk_file_name(row["idx"], row["ciphertext_sha256"])
    with archive.database.transaction() as db:
        still = next(iter(db.query("SELECT 1 FROM chunks WHERE recording_id = ? AND idx = ? AND ciphertext_sha256 = ?",
                                   [recording_id, row["idx"], row["ciphertext_sha256"]])), None)
        if still is None:
            return False
        archive.chunks.quarantine(recording_id, name)
        now = archive.now()
        db.execute("DELETE FROM chunks WHERE recording_id = ? AND idx = ? AND ciphertext_sha256 = ?",
                   [recording_id, row["idx"], row["ciphertext_sha256"]])
        # A new generation makes the recording due for a manifest that shows the gap.
        db.execute("""UPDATE recordings SET generation = generation + 1, last_activity_at = :now,
                          final_index = CASE WHEN final_index = :idx THEN NULL ELSE final_index END,
                          chunk_count = chunk_count - 1, footage_size = footage_size - :size,
                          max_index = (SELECT MAX(idx) FROM chunks WHERE recording_id = :id)
                      WHERE id = :id""",
                   {"now": now, "idx": row["idx"], "size": row["size"], "id": recording_id})
        audit.append_entry(db, at=now, actor="system", action=action, recording_id=recording_id,
                           detail={"index": row["idx"], "ciphertext_sha256": row["ciphertext_sha256"]})
    return True
