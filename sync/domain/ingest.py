"""Recordings and chunks as they arrive from devices (PROTOCOL.md,
"Recordings" and "Chunks").

The acknowledgement rule: a chunk is checked completely (digest, AEAD tag,
device signature, conflicts) before anything is written; then its bytes are
stored, then its row is committed; only then does the caller answer. The
store is never called inside a records transaction: it is written before,
and cleaned up after. A chunk that fails any check leaves no object and no
row; one whose row cannot be committed has its object removed again (or, if
the records cannot even say that nobody holds it, left for reconciliation).

What an acknowledgement (201, or 200 for the same bytes again) means:
- chunks in files (the default): the bytes were written to a temporary
  file, fsync'd, renamed into place and the folder fsync'd, then the row
  committed (SQLite WAL, `synchronous=FULL`; on PostgreSQL the commit's WAL
  flushed, `synchronous_commit=on`): both survive a power cut.
- chunks on S3 (`WITNESS_CHUNK_STORE=s3://...`): the store answered the
  chunk's PUT with 200, then the row was committed. That is as durable as
  the store makes a 200: AWS S3 stores the object redundantly first;
  SeaweedFS by default only hands it to its operating system (no fsync)
  unless the bucket is configured with `fs.configure ... -fsync` (sync/s3.py,
  docs/operations.md).

Removing a stored chunk (an upload whose row was not committed, an orphan
found by reconciliation, a damaged chunk quarantined) races with a retry of
the same bytes, which has the same name: the retry's object could vanish
under its committed row. So a removal is first announced in the records
(`chunk_removals`), in a transaction that also checks that no row holds the
name; the store is asked after it; the removal is then marked done. An
upload notes the newest announcement before it writes its object, and
refuses (`Busy`: retry) rather than commit if a removal of its name is under
way or was announced since. A remover that has not finished within
`REMOVER_DEADLINE_SECONDS` stops asking the store, and an announcement left
unfinished (its process died) stops blocking its name after
`REMOVAL_LEASE_SECONDS`; store calls are bounded well below that (sync/s3.py).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import timedelta

from crypto import InvalidEvidence
from crypto.aead import SEALED_KEY_BYTES, decrypt_chunk, open_content_key
from crypto.signing import load_device_public_key, verify_chunk_signature

from ..archive import Archive
from ..errors import (
    BadDeviceSignature,
    BelowWatermark,
    Busy,
    DeviceGone,
    BadSealedKey,
    ChunkConflict,
    ChunkTooLarge,
    ChunkUnreadable,
    DigestMismatch,
    InvalidInput,
    NotFound,
    PastFinal,
    RecordingConflict,
    UnknownKeyId,
    WitnessError,
)
from ..records.rows import Chunk, Device, Recording
from ..storage import LocalChunkDisk
from ..timefmt import format_time
from . import audit, transparency
from .disk import below_watermark
from .identifiers import parse_canonical_uuid

log = logging.getLogger("witness.ingest")

MAX_CHUNK_INDEX = 2**31 - 1
# See the module docstring: a remover stops asking the store this long after
# announcing; an unfinished announcement stops blocking its name after the
# lease (the deadline plus the longest a store call takes, with room for
# clocks that differ between app nodes).
REMOVER_DEADLINE_SECONDS = 30.0
REMOVAL_LEASE_SECONDS = 300.0
_CHUNK_NAME = re.compile(r"(\d{10})-([0-9a-f]{64})")


def parse_recording_id(text) -> str:
    """Return `text` if it is a UUID in canonical form (lowercase, hyphens).

    The id is part of the key's HPKE info and every chunk's AAD, so it is
    compared as the exact string the device used; only the canonical
    spelling is accepted, so two spellings cannot name one recording.
    Raises `InvalidInput` otherwise."""
    return parse_canonical_uuid(text, "recording_id")


def b64url_decode(text, field: str) -> bytes:
    """Decode base64url without padding (padding tolerated); `InvalidInput`
    naming `field` if it is not."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise InvalidInput(f"invalid_{field}", f"{field} must be base64url without padding.")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInput(f"invalid_{field}", f"{field} must be base64url without padding.") from None


def b64url_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class NewRecording:
    """`POST /v1/recordings` as the domain takes it, its fields well formed
    (server/devices.py reads them from the wire): a canonical recording id,
    a video/* or audio/* media type, `started_at` normalized (RFC 3339, UTC),
    the HPKE key id and the sealed content key's bytes."""

    recording_id: str
    content_type: str
    started_at: str
    key_id: str
    sealed_key: bytes


@dataclass(frozen=True)
class ChunkUpload:
    """`PUT .../chunks/{index}` as the domain takes it: the body, the SHA-256
    its `Content-Digest` names, `Witness-Final`, `Witness-Captured-At`
    (normalized) and `Witness-Device-Signature` (base64url), as read from
    the wire by server/devices.py."""

    recording_id: str
    index: int
    body: bytes
    digest: bytes
    final: bool = False
    captured_at: str | None = None
    device_signature: str | None = None


def create_recording(archive: Archive, device_id: str, new: NewRecording) -> tuple[dict, bool]:
    """Create the recording `new`, owned by `device_id`. Returns `(answer,
    created)`; `created` is False when the identical recording was already
    accepted (a retry).

    Raises `InvalidInput` (a sealed key of the wrong length), `UnknownKeyId`
    when the key id is not the server's, `BadSealedKey` when the sealed key
    does not open, `RecordingConflict` when the id is taken by another body or
    device, and `BelowWatermark` (a `StorageFull`) for a new recording while
    free disk is below the watermark (`min_free_bytes`; a retry of one
    already made still answers).
    """
    recording_id, content_type, started_at = new.recording_id, new.content_type, new.started_at
    key_id, sealed_key = new.key_id, new.sealed_key
    if len(sealed_key) != SEALED_KEY_BYTES:
        raise InvalidInput("invalid_sealed_key", f"sealed_key must decode to {SEALED_KEY_BYTES} bytes (enc || ciphertext).")
    if key_id != archive.keys.hpke_key_id:
        raise UnknownKeyId("key_id is not this server's HPKE key; fetch GET /v1/keys and seal the key again.")
    try:
        open_content_key(archive.keys.hpke_private, recording_id, sealed_key)
    except InvalidEvidence:
        raise BadSealedKey("sealed_key does not open: seal the content key to the server's HPKE key "
                           "with info 'witness/v1 recording-key <recording_id>'.") from None

    with archive.database.transaction() as db:
        existing = db.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ?", [recording_id])
        if existing is not None:
            same = (
                existing.device_id == device_id
                and existing.content_type == content_type
                and existing.started_at == started_at
                and existing.key_id == key_id
                and existing.sealed_key == sealed_key
            )
            if not same:
                raise RecordingConflict("This recording id is already in use with a different body; "
                                        "generate a new recording id.")
            return _creation_answer(archive, existing.id, existing.state), False
        if below_watermark(archive):
            # What space is left goes to recordings already started.
            raise BelowWatermark("The server is low on disk space and takes no new recordings for now; chunks of "
                              "recordings already started are still taken. Keep the recording and retry later.")
        now = archive.now()
        device = next(iter(db.query("SELECT organisation_id FROM devices WHERE id = ?", [device_id])), None)
        if device is None:  # revoked or expired between the token check and here
            raise DeviceGone("This device's registration has ended; register again (POST /v1/devices).")
        row = {
            "id": recording_id,
            "organisation_id": device["organisation_id"],
            "device_id": device_id,
            "content_type": content_type,
            "started_at": started_at,
            "key_id": key_id,
            "sealed_key": sealed_key,
            "created_at": now,
            "state": "receiving",
            "last_activity_at": now,
            "generation": 0,
            "chunk_count": 0,
            "footage_size": 0,
        }
        db.insert("recordings", row)
        audit.append_entry(db, at=now, actor=f"device:{device_id}", action="recording.created",
                           recording_id=recording_id, detail={"content_type": content_type, "started_at": started_at})
    if isinstance(archive.chunks, LocalChunkDisk):
        archive.chunks.prepare(recording_id)
    return _creation_answer(archive, recording_id, row["state"]), True


def _creation_answer(archive: Archive, recording_id: str, state: str) -> dict:
    return {
        "recording_id": recording_id,
        "state": state,
        "max_chunk_bytes": archive.settings.max_chunk_bytes,
        "idle_finalize_seconds": _whole(archive.settings.idle_finalize_seconds),
    }


def _whole(seconds: float):
    return int(seconds) if float(seconds).is_integer() else seconds


def owned_recording(archive: Archive, recording_id: str, device_id: str | None = None, *,
                    organisation_id: int | None = None) -> Recording:
    """The recording row, if it exists and is visible: owned by `device_id`
    and/or held by `organisation_id`, when given. Otherwise `NotFound`, with
    no hint whether it exists."""
    row = archive.database.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ?", [recording_id])
    if not _visible(row, device_id, organisation_id):
        raise NotFound("No such recording.")
    return row


def _visible(row: Recording | None, device_id: str | None, organisation_id: int | None) -> bool:
    return row is not None and (device_id is None or row.device_id == device_id) \
        and (organisation_id is None or row.organisation_id == organisation_id)


def accept_chunk(archive: Archive, device_id: str, upload: ChunkUpload, *, recording: Recording | None = None,
                 device: Device | None = None) -> tuple[dict, bool]:
    """Check and durably store the chunk `upload`, then return `(receipt,
    created)`. `created` is False when the identical bytes were already held.

    `recording` (from `owned_recording`) and `device` (the device's row with
    its `public_key_pem`, as the token check read it) save reading them
    again when the caller already has them; what can change under a
    concurrent upload (the final index) is checked again inside the commit.

    Raises, leaving nothing behind: `NotFound` (not this device's recording),
    `InvalidInput` (bad index or signature syntax), `ChunkTooLarge`,
    `DigestMismatch`, `PastFinal`, `ChunkUnreadable`, `BadDeviceSignature`,
    `ChunkConflict` (first bytes kept, attempt audited), `StorageFull`,
    `StoreUnavailable` (the chunk store is down), `Busy` (the records are
    held, or an earlier copy of these bytes is being removed: retry).
    """
    recording_id, index, body, final = upload.recording_id, upload.index, upload.body, upload.final
    captured_at, device_signature = upload.captured_at, upload.device_signature
    if recording is None or recording.id != recording_id or recording.device_id != device_id:
        recording = owned_recording(archive, recording_id, device_id)
    if not isinstance(index, int) or not 0 <= index <= MAX_CHUNK_INDEX:
        raise InvalidInput("invalid_index", f"The chunk index must be an integer from 0 to {MAX_CHUNK_INDEX}.")
    if len(body) > archive.settings.max_chunk_bytes:
        raise ChunkTooLarge(f"Chunks may be at most {archive.settings.max_chunk_bytes} bytes; split the piece.")
    actual = hashlib.sha256(body).digest()
    if actual != upload.digest:
        raise DigestMismatch("Content-Digest does not match the body received; the body was damaged "
                             "in transit. Send the chunk again.")
    ciphertext_sha256 = actual.hex()

    held = _held_chunk(archive, recording_id, index)
    if held is not None:
        return _settle_duplicate(archive, device_id, recording_id, index, held, ciphertext_sha256)
    _check_final(recording, index, final, archive)

    try:
        content_key = _content_key(archive.keys.hpke_private, recording_id, recording.sealed_key)
        plaintext = decrypt_chunk(content_key, recording_id, index, body, final=final)
    except InvalidEvidence:
        raise ChunkUnreadable(
            "The chunk does not decrypt under the recording's key with nonce and AAD for this index "
            f"and finality ({'final' if final else 'more'}); check the index and Witness-Final."
        ) from None
    if device is None or device.id != device_id:
        device = archive.database.fetch_one(Device, "SELECT * FROM devices WHERE id = ?", [device_id])
    pem = device.public_key_pem if device else None
    signature = _check_device_signature(pem, recording_id, index, ciphertext_sha256, device_signature)

    name = chunk_file_name(index, ciphertext_sha256)
    horizon = _removal_horizon(archive, recording_id, name)
    archive.chunks.put(recording_id, name, body)

    def record(db) -> tuple[dict | None, Chunk | None]:
        """The chunk's row, in a commit shared with other uploads of this
        process: `((received_at, log_index, leaf), None)`, or `(None, held row)` when a concurrent
        upload of this index committed first. Runs on whichever thread
        commits, so it uses only its arguments."""
        held = db.fetch_one(Chunk, "SELECT * FROM chunks WHERE recording_id = ? AND idx = ?", [recording_id, index])
        if held is not None:
            return None, held
        current = db.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ?", [recording_id])
        _check_final(current, index, final, archive, db=db)
        # A removal of this very name (an identical upload that failed,
        # reconciliation) announced since we looked may have taken our
        # object away: never commit without it.
        if _removal_announced_since(db, recording_id, name, horizon):
            raise Busy(_REMOVAL_UNDER_WAY)
        now = archive.now()
        entry = audit.append_entry(db, at=now, actor=f"device:{device_id}", action="chunk.received",
                                   recording_id=recording_id, organisation_id=recording.organisation_id,
                                   detail={"index": index, "ciphertext_sha256": ciphertext_sha256,
                                           "size": len(body), "final": final})
        db.execute(
            """INSERT INTO chunks (recording_id, idx, final, size, sha256, ciphertext_size,
                                   ciphertext_sha256, received_at, captured_at, device_signature, log_index)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [recording_id, index, int(final), len(plaintext), hashlib.sha256(plaintext).hexdigest(),
             len(body), ciphertext_sha256, now, captured_at, signature, entry["log_index"]])
        db.execute(
            """UPDATE recordings SET generation = generation + 1,
                   first_received_at = COALESCE(first_received_at, :now),
                   last_received_at = :now, last_activity_at = :now,
                   chunk_count = chunk_count + 1, footage_size = footage_size + :size,
                   max_index = CASE WHEN max_index IS NULL OR max_index < :idx THEN :idx
                                    ELSE max_index END,
                   final_index = CASE WHEN :final = 1 THEN :idx ELSE final_index END,
                   state = 'receiving'
               WHERE id = :id""",
            {"now": now, "final": int(final), "idx": index, "id": recording_id, "size": len(plaintext)},
        )
        return (now, entry["log_index"], entry["log_leaf"]), None

    try:
        acknowledged, held = archive.chunk_commits.run(record)
    except BaseException:
        # Nothing partial: the row was rolled back, so the object goes too.
        discard_unheld_chunks(archive, recording_id, [name])
        raise
    if acknowledged is not None:
        received_at, log_index, leaf = acknowledged
        return _receipt(archive, recording_id, index, len(body), ciphertext_sha256, received_at, log_index,
                        leaf), True
    # A concurrent upload of the same index committed first.
    if held.ciphertext_sha256 != ciphertext_sha256:
        discard_unheld_chunks(archive, recording_id, [name])
    return _settle_duplicate(archive, device_id, recording_id, index, held, ciphertext_sha256)


_REMOVAL_UNDER_WAY = ("An earlier, unacknowledged copy of this chunk is being removed from the server's storage; "
                      "nothing was kept. Retry shortly.")


def _lease_start(archive: Archive) -> str:
    return format_time(archive.clock() - timedelta(seconds=REMOVAL_LEASE_SECONDS))


def _removal_horizon(archive: Archive, recording_id: str, name: str) -> int:
    """The newest removal announced so far (any name), noted before an upload
    writes its object. Raises `Busy` if a removal of this name is under way:
    it could take away the object about to be written."""
    row = archive.database.one(
        """SELECT COALESCE((SELECT MAX(seq) FROM chunk_removals), 0) AS horizon,
                  EXISTS (SELECT 1 FROM chunk_removals WHERE recording_id = ? AND name = ?
                          AND done_at IS NULL AND announced_at > ?) AS under_way""",
        [recording_id, name, _lease_start(archive)])
    if row["under_way"]:
        raise Busy(_REMOVAL_UNDER_WAY)
    return row["horizon"]


def _removal_announced_since(db, recording_id: str, name: str, horizon: int) -> bool:
    return next(iter(db.query("SELECT 1 FROM chunk_removals WHERE recording_id = ? AND name = ? AND seq > ?",
                              [recording_id, name, horizon])), None) is not None


def announce_removals(db, archive: Archive, recording_id: str, names: list[str]) -> list[tuple[str, int]]:
    """Inside a records transaction: announce the removal of these stored
    chunks (see the module docstring); returns `(name, seq)` pairs for
    `carry_out_removals`, to be called after the transaction commits."""
    now, announced = archive.now(), []
    for name in names:
        (row,) = db.query("INSERT INTO chunk_removals (recording_id, name, announced_at) VALUES (?, ?, ?) "
                          "RETURNING seq", [recording_id, name, now])
        announced.append((name, row["seq"]))
    return announced


def carry_out_removals(archive: Archive, recording_id: str, announced: list[tuple[str, int]], remove) -> list[str]:
    """After `announce_removals` committed: `remove(recording_id, name)`
    (the store's `delete` or `quarantine`) for each, then mark them done.
    A removal that fails, or would start past the deadline, stays announced
    (its lease frees the name) and its object is left for reconciliation.
    Returns the names removed."""
    started, done = time.monotonic(), []
    for name, seq in announced:
        if time.monotonic() - started > REMOVER_DEADLINE_SECONDS:
            log.warning("removing stored chunks of %s took too long; the rest are left for reconciliation",
                        recording_id)
            break
        try:
            remove(recording_id, name)
        except (OSError, WitnessError) as exc:
            log.warning("could not remove stored chunk %s/%s (left for reconciliation): %s", recording_id, name, exc)
            continue
        done.append((name, seq))
    if done:
        try:
            with archive.database.transaction() as db:
                db.execute(f"UPDATE chunk_removals SET done_at = ? WHERE seq IN ({', '.join('?' * len(done))})",
                           [archive.now(), *(seq for _, seq in done)])
        except WitnessError:
            pass  # the lease frees the names
    return [name for name, _ in done]


def discard_unheld_chunks(archive: Archive, recording_id: str, names: list[str]) -> list[str]:
    """Delete the stored chunks among `names` that no row holds; return the
    names deleted. Whether a row holds each is decided (and the removal
    announced) in one records transaction; the store is asked after it. If
    the records cannot be written (busy, full), nothing is deleted and the
    objects are left for reconciliation."""
    try:
        with archive.database.transaction() as db:
            unheld = [name for name in names if not _row_holds(db, recording_id, name)]
            announced = announce_removals(db, archive, recording_id, unheld)
    except WitnessError:
        return []
    return carry_out_removals(archive, recording_id, announced, archive.chunks.delete)


def _row_holds(db, recording_id: str, name: str) -> bool:
    match = _CHUNK_NAME.fullmatch(name)
    return bool(match) and next(iter(db.query(
        "SELECT 1 FROM chunks WHERE recording_id = ? AND idx = ? AND ciphertext_sha256 = ?",
        [recording_id, int(match.group(1)), match.group(2)])), None) is not None


def chunk_file_name(index: int, ciphertext_sha256: str) -> str:
    """Chunk files are named by index and content, so two racing uploads of
    different bytes for one index never overwrite each other's file."""
    return f"{index:010d}-{ciphertext_sha256}"


@functools.lru_cache(maxsize=1024)
def _content_key(hpke_private, recording_id: str, sealed_key: bytes) -> bytes:
    """The recording's content key, opened once per process for the
    recordings uploading now (an HPKE open per chunk was a tenth of the
    request's CPU). Keyed by the sealed bytes themselves; a key that does not
    open raises and is not kept."""
    return open_content_key(hpke_private, recording_id, sealed_key)


def _held_chunk(archive: Archive, recording_id: str, index: int) -> Chunk | None:
    return archive.database.fetch_one(Chunk, "SELECT * FROM chunks WHERE recording_id = ? AND idx = ?", [recording_id, index])


def _receipt(archive: Archive, recording_id: str, index: int, size: int, sha256: str, received_at: str,
             log_index: int | None, leaf: bytes | None = None) -> dict:
    """The acknowledgement (PROTOCOL.md), and with it, when the chunk is in
    the transparency log, the signed receipt (`transparency.sign_receipt`)."""
    answer = {"index": index, "size": size, "sha256": sha256, "received_at": received_at}
    if log_index is not None:
        answer["receipt"] = transparency.sign_receipt(archive, recording_id=recording_id, index=index,
                                                      ciphertext_sha256=sha256, received_at=received_at,
                                                      log_index=log_index, leaf=leaf)
    return answer


def _settle_duplicate(archive, device_id, recording_id, index, held: Chunk, ciphertext_sha256):
    if held.ciphertext_sha256 == ciphertext_sha256:
        return _receipt(archive, recording_id, index, held.ciphertext_size, held.ciphertext_sha256, held.received_at,
                        held.log_index), False
    with archive.database.transaction() as db:
        audit.append_entry(db, at=archive.now(), actor=f"device:{device_id}", action="chunk.conflict",
                           recording_id=recording_id,
                           detail={"index": index, "held_ciphertext_sha256": held.ciphertext_sha256,
                                   "rejected_ciphertext_sha256": ciphertext_sha256})
    raise ChunkConflict(f"Chunk {index} is already held with different bytes; the first bytes are kept. "
                        "Do not send this index again.")


def _check_final(recording: Recording, index: int, final: bool, archive: Archive, db=None) -> None:
    final_index = recording.final_index
    if final_index is not None and index > final_index:
        raise PastFinal(f"This recording ends at chunk {final_index} (marked final); nothing comes after it.")
    if final and final_index is not None and index != final_index:
        raise PastFinal(f"Chunk {final_index} is already marked final; a recording has one final chunk.")
    if final:
        query = (db.query if db is not None else archive.database.query)
        highest = list(query("SELECT MAX(idx) AS top FROM chunks WHERE recording_id = ?", [recording.id]))
        top = highest[0]["top"] if highest else None
        if top is not None and top > index:
            raise PastFinal(f"Chunk {top} is already held, so chunk {index} cannot be the final one.")


def _check_device_signature(pem: str | None, recording_id, index, ciphertext_sha256, header) -> str | None:
    if pem is None:
        if header is not None:
            raise BadDeviceSignature("This device registered no public key, so its chunks cannot be signed; "
                                     "omit Witness-Device-Signature or register a key.")
        return None
    if header is None:
        raise BadDeviceSignature("This device registered a public key: every chunk needs Witness-Device-Signature.")
    try:
        signature = b64url_decode(header, "device_signature")
        verify_chunk_signature(load_device_public_key(pem), signature, recording_id, index, ciphertext_sha256)
    except (InvalidInput, InvalidEvidence):
        raise BadDeviceSignature("Witness-Device-Signature does not verify: sign 'witness/v1 chunk-sig "
                                 "<recording_id> <index> <hex sha256 of the body>' with the registered key.") from None
    return b64url_encode(signature)


def index_ranges(indexes) -> list[list[int]]:
    """Inclusive ranges of a sorted iterable of integers: [0,1,2,5] -> [[0,2],[5,5]]."""
    ranges: list[list[int]] = []
    for i in indexes:
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ranges


def missing_ranges(received: list[list[int]], final_index: int | None) -> list[list[int]]:
    """Holes below the highest held index, or up to `final_index` when known."""
    holes, expected = [], 0
    for start, end in received:
        if start > expected:
            holes.append([expected, start - 1])
        expected = end + 1
    if final_index is not None and final_index >= expected:
        holes.append([expected, final_index])
    return holes


def recording_status(archive: Archive, recording_id: str, *, device_id: str | None = None,
                     organisation_id: int | None = None) -> dict:
    """Upload status for resuming (PROTOCOL.md `GET .../status`). With
    `device_id`, only that device's recordings are visible; with
    `organisation_id`, only that organisation's (`NotFound`)."""
    with archive.database.snapshot() as db:
        row = db.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ?", [recording_id])
        if not _visible(row, device_id, organisation_id):
            raise NotFound("No such recording.")
        indexes = [r["idx"] for r in db.query("SELECT idx FROM chunks WHERE recording_id = ? ORDER BY idx",
                                              [recording_id])]
    received = index_ranges(indexes)
    return {
        "recording_id": recording_id,
        "state": row.state,
        "received": received,
        "missing": missing_ranges(received, row.final_index),
        "final_index": row.final_index,
        "last_received_at": row.last_received_at,
        "manifest_version": row.manifest_version,
    }


def request_completion(archive: Archive, device_id: str, recording_id: str) -> dict:
    """Note that the device stopped recording normally. The recording is
    finalized as `complete` as soon as every chunk up to the final one is held
    (by the scheduler). Returns the current status. Raises `NotFound`."""
    owned_recording(archive, recording_id, device_id)
    with archive.database.transaction() as db:
        now = archive.now()
        db.execute("UPDATE recordings SET complete_requested_at = COALESCE(complete_requested_at, ?), "
                   "last_activity_at = ? WHERE id = ?", [now, now, recording_id])
        audit.append_entry(db, at=now, actor=f"device:{device_id}", action="recording.complete_requested",
                           recording_id=recording_id)
    return recording_status(archive, recording_id, device_id=device_id)
