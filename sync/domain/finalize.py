"""Finalization: turning what has arrived into a signed manifest version.

A recording is due when it holds every chunk up to the one marked final
(state `complete`), or when nothing has arrived for `idle_finalize_seconds`
(state `interrupted`: the phone never said goodbye). A chunk arriving after
that makes it due again and yields a new version chained to the previous one
by `previous_manifest_sha256`; earlier versions are kept.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from crypto.tsa import time_stamp

from ..archive import Archive
from ..errors import NotFound, NotReady
from ..evidence.manifest import ManifestChunk, build_manifest
from ..records.rows import Chunk, Manifest, Recording
from ..timefmt import format_time, parse_time
from . import audit
from .footage import iter_chunk_plaintexts
from .ingest import index_ranges, missing_ranges


# A recording is due when chunks are not yet covered by a manifest and it is
# either idle past the limit (:idle is the time that long ago) or complete.
_UNFINALIZED = "(r.finalized_generation IS NULL OR r.finalized_generation != r.generation)"
_IDLE = "r.last_activity_at <= :idle"
_COMPLETE = "(r.final_index IS NOT NULL AND r.chunk_count = r.final_index + 1)"


def due_recording_ids(archive: Archive) -> list[str]:
    """Recordings whose latest chunks are not yet covered by a manifest and
    that are either complete or idle past the configured limit."""
    idle_since = format_time(archive.clock() - timedelta(seconds=archive.settings.idle_finalize_seconds))
    rows = archive.database.query(
        f"""SELECT r.id FROM recordings r
            WHERE {_UNFINALIZED} AND ({_IDLE} OR {_COMPLETE})
            ORDER BY r.last_activity_at""",
        {"idle": idle_since},
    )
    return [row["id"] for row in rows]


def finalization_lag_seconds(archive: Archive) -> float:
    """How long the most overdue recording has been due without being
    finalized: since its last chunk for a complete one, since its idle
    deadline for an idle one. 0.0 when nothing is due. A healthy leader keeps
    this below a few scheduler intervals; a growing value means
    finalization is stuck."""
    now = archive.clock()
    idle = timedelta(seconds=archive.settings.idle_finalize_seconds)
    row = archive.database.one(
        f"""SELECT MIN(CASE WHEN {_COMPLETE} THEN r.last_activity_at END) AS complete_since,
                   MIN(CASE WHEN {_IDLE} THEN r.last_activity_at END) AS idle_since
            FROM recordings r WHERE {_UNFINALIZED}""",
        {"idle": format_time(now - idle)},
    )
    deadlines = []
    if row and row["complete_since"] is not None:
        deadlines.append(parse_time(row["complete_since"]))
    if row and row["idle_since"] is not None:
        deadlines.append(parse_time(row["idle_since"]) + idle)
    return max(0.0, (now - min(deadlines)).total_seconds()) if deadlines else 0.0


def finalize_due_recordings(archive: Archive) -> list[tuple[str, int]]:
    """Finalize every due recording; return `(recording_id, version)` pairs
    made. One recording failing (e.g. a damaged chunk) does not stop the
    rest; the failure is raised after all were tried."""
    made, failures = [], []
    for recording_id in due_recording_ids(archive):
        try:
            version = finalize_recording(archive, recording_id)
        except Exception as exc:  # keep finalizing the others
            failures.append(exc)
            continue
        if version is not None:
            made.append((recording_id, version))
    if failures:
        raise failures[0]
    return made


def finalize_recording(archive: Archive, recording_id: str) -> int | None:
    """Write the next manifest version for a recording and return its number,
    or None if a chunk arrived meanwhile (it will be due again) or the last
    manifest already covers every chunk.

    Streams the footage once, one chunk at a time, to hash it and to check
    each stored chunk against its record. Raises `NotFound`, and
    `footage.FootageDamaged` if a stored chunk is missing or altered — after
    taking that chunk out of the records, so the next attempt signs the gap.
    """
    with archive.database.snapshot() as db:
        recording = db.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ?", [recording_id])
        if recording is None:
            raise NotFound("No such recording.")
        rows = db.fetch(Chunk, "SELECT * FROM chunks WHERE recording_id = ? ORDER BY idx", [recording_id])
        previous = db.one("SELECT version, sha256 FROM manifests WHERE recording_id = ? ORDER BY version DESC LIMIT 1",
                          [recording_id])
    generation = recording.generation
    if recording.finalized_generation == generation:
        return None

    footage_hash, footage_size = hashlib.sha256(), 0
    for _, plaintext in iter_chunk_plaintexts(archive, recording, rows):
        footage_hash.update(plaintext)
        footage_size += len(plaintext)

    received = index_ranges(row.idx for row in rows)
    gaps = missing_ranges(received, recording.final_index)
    complete = recording.final_index is not None and not gaps and len(rows) == recording.final_index + 1
    state = "complete" if complete else "interrupted"

    # Built, signed and time-stamped before the write transaction, which
    # every chunk's commit waits for (a one-hour recording's manifest takes
    # tens of milliseconds); the transaction only checks that nothing moved.
    version = previous["version"] + 1 if previous else 1
    now = archive.now()
    body = build_manifest(
        version=version,
        previous_sha256=previous["sha256"] if previous else None,
        recording_id=recording_id,
        device_id=recording.device_id,
        content_type=recording.content_type,
        state=state,
        started_at=recording.started_at,
        first_received_at=recording.first_received_at,
        last_received_at=recording.last_received_at,
        finalized_at=now,
        final_index=recording.final_index,
        chunks=[ManifestChunk(index=row.idx, size=row.size, sha256=row.sha256,
                              ciphertext_size=row.ciphertext_size,
                              ciphertext_sha256=row.ciphertext_sha256, received_at=row.received_at,
                              captured_at=row.captured_at, device_signature=row.device_signature)
                for row in rows],
        gaps=gaps,
        footage_size=footage_size,
        footage_sha256=footage_hash.hexdigest(),
        signing_key_id=archive.keys.signing_key_id,
    )
    digest = hashlib.sha256(body).digest()
    sha256 = digest.hex()
    signature = archive.keys.signing_private.sign(body)
    token = time_stamp(archive.keys.tsa, digest, at=archive.clock())

    with archive.database.transaction() as db:
        current = db.one("SELECT generation, manifest_version FROM recordings WHERE id = ?", [recording_id])
        if current["generation"] != generation or current["manifest_version"] != recording.manifest_version:
            return None  # a chunk (or another finalizer) came in between: due again, built again
        db.insert("manifests", {
            "recording_id": recording_id, "version": version, "state": state, "body": body,
            "sha256": sha256, "signature": signature, "tsr": token, "created_at": now,
        })
        db.execute(
            "UPDATE recordings SET state = ?, finalized_generation = ?, manifest_version = ? WHERE id = ?",
            [state, generation, version, recording_id],
        )
        audit.append_entry(db, at=now, actor="system", action="recording.finalized", recording_id=recording_id,
                           detail={"version": version, "state": state, "manifest_sha256": sha256,
                                   "chunks": len(rows), "gaps": gaps})
    return version


def manifest_versions(archive: Archive, recording_id: str) -> list[dict]:
    """Every manifest version of a recording: version, state, sha256, time."""
    return archive.database.query(
        "SELECT version, state, sha256, created_at FROM manifests WHERE recording_id = ? ORDER BY version",
        [recording_id])


def signed_manifest(archive: Archive, recording_id: str, version: int | None = None, *,
                    organisation_id: int | None = None) -> Manifest:
    """The manifest row (`body`, `signature`, `sha256`, `version`, ...) of the
    given or the latest version. Raises `NotFound` for an unknown version and
    `NotReady` while the recording has no manifest yet; `NotFound` for an
    unknown recording too, or one of another organisation than
    `organisation_id` (when given)."""
    owner = archive.database.one("SELECT organisation_id FROM recordings WHERE id = ?", [recording_id])
    if owner is None or (organisation_id is not None and owner["organisation_id"] != organisation_id):
        raise NotFound("No such recording.")
    if version is None:
        row = archive.database.fetch_one(
            Manifest, "SELECT * FROM manifests WHERE recording_id = ? ORDER BY version DESC LIMIT 1", [recording_id])
        if row is None:
            raise NotReady("This recording has not been finalized yet; it will be when it completes or goes idle.")
    else:
        row = archive.database.fetch_one(
            Manifest, "SELECT * FROM manifests WHERE recording_id = ? AND version = ?", [recording_id, version])
        if row is None:
            raise NotFound(f"This recording has no manifest version {version}.")
    return row


