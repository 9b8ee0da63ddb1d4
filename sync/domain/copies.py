"""Copy requests: a lawyer asks for a signed copy of a recording for a case,
a custodian approves or denies it, the scheduler builds the bundle
(`bundle.py`), and the lawyer downloads it.

    pending --approve--> approved --(scheduler)--> building --> ready
       |                  |   ^                          |
       | deny             |   '------ approve again ---- failed
       v                  v deny (before the build)      | deny
     denied <-------------+------------------------------'

Lawyers see only their own requests; custodians see every request of their
organisation. A request of another organisation, or another lawyer's, is
`NotFound`, like one that does not exist. Every step is an audit entry about
the recording, so it appears in the recording's custody log (and so in the
bundles built after it).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..archive import BUNDLES_FOLDER, Archive
from ..errors import BundleNotReady, InvalidInput, NotFound, NotPending, WitnessError
from ..records.rows import CopyRequest
from . import audit, bundle
from .identifiers import parse_canonical_uuid
from .ingest import owned_recording
from .paging import newest_first_page

log = logging.getLogger("witness.copies")

COPY_STATES = ("pending", "approved", "denied", "building", "ready", "failed")
LAWYER, CUSTODIAN = "lawyer", "custodian"
MAX_CASE_REFERENCE = 200
MAX_TEXT = 2000
# Where a bundle is written while it is built, before it goes to the blob
# store (decrypted footage: the same care as the bundles themselves).
SCRATCH_FOLDER = "scratch"
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class StaffMember:
    """Who is asking: for the audit log (`actor`), what they may see
    (`organisation_id`, `role`) and whose requests are theirs (`username`)."""

    username: str
    role: str
    organisation_id: int

    @property
    def actor(self) -> str:
        return f"staff:{self.username}"


@dataclass(frozen=True)
class NewCopyRequest:
    """What a lawyer asks for, as the domain takes it: the `case_reference`
    (one line, at most 200 characters) and the `purpose` (at most 2000),
    each trimmed. Made from the values a JSON body or a form sent, which it
    checks in that order: raises `InvalidInput` (`invalid_case_reference`,
    `invalid_purpose`) for anything but such text."""

    case_reference: str
    purpose: str

    def __post_init__(self):
        object.__setattr__(self, "case_reference",
                           _text(self.case_reference, "case_reference", MAX_CASE_REFERENCE, one_line=True))
        object.__setattr__(self, "purpose", _text(self.purpose, "purpose", MAX_TEXT))


@dataclass(frozen=True)
class Decision:
    """A custodian's decision on a request, as the domain takes it: the
    `reason` (at most 2000 characters, trimmed), which a denial needs and
    an approval may leave out (None). Raises `InvalidInput`
    (`invalid_reason`) for a reason that is not such text."""

    reason: str | None = None

    def __post_init__(self):
        if self.reason is not None:
            object.__setattr__(self, "reason", _text(self.reason, "reason", MAX_TEXT))


def parse_request_id(text) -> str:
    """A copy request id from a path: a canonical UUID; `InvalidInput`."""
    return parse_canonical_uuid(text, "request_id")


def request_copy(archive: Archive, who: StaffMember, recording_id: str, new: NewCopyRequest) -> dict:
    """A lawyer's request `new` for a copy of a recording of their
    organisation; returns it as `public_request` shows it. Audited as
    `copy.requested`. Raises `NotFound`."""
    case_reference, purpose = new.case_reference, new.purpose
    owned_recording(archive, recording_id, organisation_id=who.organisation_id)  # raises NotFound
    request_id = str(uuid.uuid4())
    with archive.database.transaction() as db:
        now = archive.now()
        db.execute(
            """INSERT INTO copy_requests (id, organisation_id, recording_id, requested_by, case_reference, purpose,
                                          state, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)""",
            [request_id, who.organisation_id, recording_id, who.username, case_reference, purpose, now, now])
        audit.append_entry(db, at=now, actor=who.actor, action="copy.requested", recording_id=recording_id,
                           detail={"request_id": request_id, "case_reference": case_reference, "purpose": purpose})
    return copy_request(archive, who, request_id)


def copy_request(archive: Archive, who: StaffMember, request_id: str) -> dict:
    """One request as its viewer may see it. Raises `NotFound`."""
    return public_request(_visible_row(archive, who, request_id))


def list_copy_requests(archive: Archive, who: StaffMember, *, state: str | None = None,
                       recording_id: str | None = None, limit: int = 50,
                       cursor: str | None = None) -> tuple[list[dict], str | None]:
    """A page of the requests `who` may see (a lawyer's own; a custodian's
    whole organisation), newest first. Raises `InvalidInput`."""
    where, params = ["organisation_id = ?"], [who.organisation_id]
    if who.role != CUSTODIAN:
        where.append("requested_by = ?")
        params.append(who.username)
    if state is not None:
        if state not in COPY_STATES:
            raise InvalidInput("invalid_state", f"state must be one of {', '.join(COPY_STATES)}.")
        where.append("state = ?")
        params.append(state)
    if recording_id is not None:
        where.append("recording_id = ?")
        params.append(recording_id)
    rows, next_cursor = newest_first_page(archive.database, "copy_requests", where, params, kind="copy-requests",
                                          limit=limit, cursor=cursor)
    return [public_request(CopyRequest.of(row)) for row in rows], next_cursor


def approve(archive: Archive, who: StaffMember, request_id: str, decision: Decision) -> dict:
    """A custodian approves a pending request (or approves a failed one
    again, to retry the build), with the decision's reason if it has one;
    the scheduler then builds the bundle. Audited as `copy.approved`.
    Raises `NotFound` and `NotPending`."""
    return _decide(archive, who, request_id, "approved", decision.reason, allowed_from=("pending", "failed"))


def deny(archive: Archive, who: StaffMember, request_id: str, decision: Decision) -> dict:
    """A custodian denies a pending request, or withdraws an approval whose
    build has not started (an approved request waiting for its recording's
    first manifest, or a failed one); the decision needs a reason. No
    bundle is ever built for it. Audited as `copy.denied`. Raises
    `InvalidInput` (`invalid_reason`) for a decision without a reason, then
    `NotFound` and `NotPending`."""
    if decision.reason is None:
        raise InvalidInput("invalid_reason", _length_rule("reason", MAX_TEXT))
    return _decide(archive, who, request_id, "denied", decision.reason,
                   allowed_from=("pending", "approved", "failed"))


def _decide(archive: Archive, who: StaffMember, request_id: str, state: str, reason: str | None, *,
            allowed_from: tuple[str, ...]) -> dict:
    with archive.database.transaction() as db:
        row = db.fetch_one(CopyRequest, "SELECT * FROM copy_requests WHERE id = ? AND organisation_id = ?",
                           [request_id, who.organisation_id])
        if row is None:
            raise NotFound("No such copy request.")
        if row.state not in allowed_from:
            raise NotPending(f"This request is {row.state}; only a request that is "
                             f"{' or '.join(allowed_from)} can be {state}.")
        now = archive.now()
        db.execute("""UPDATE copy_requests SET state = ?, decided_by = ?, decided_at = ?, decision_reason = ?,
                                               failure = NULL, updated_at = ? WHERE id = ?""",
                   [state, who.username, now, reason, now, request_id])
        audit.append_entry(db, at=now, actor=who.actor, action=f"copy.{state}", recording_id=row.recording_id,
                           detail={"request_id": request_id, "reason": reason})
    return copy_request(archive, who, request_id)


@dataclass(frozen=True)
class ReadyBundle:
    """A ready request's bundle as found when the download began: its name
    in the blob store, the request, and its size."""

    name: str
    request: CopyRequest
    size: int

    @property
    def etag(self) -> str:
        return f'"{self.request.bundle_sha256}"'


def ready_bundle(archive: Archive, who: StaffMember, request_id: str) -> ReadyBundle:
    """The bundle of a ready request the viewer may see. Raises `NotFound`
    and `BundleNotReady`."""
    row = _visible_row(archive, who, request_id)
    if row.state != "ready":
        raise BundleNotReady(_not_ready_message(row))
    name = bundle_name(request_id)
    size = archive.blobs.size(name)
    if size is None:
        raise BundleNotReady("The bundle file is no longer on the server; ask for a new copy.")
    return ReadyBundle(name, row, size)


def stream_bundle(archive: Archive, who: StaffMember, bundle: ReadyBundle, start: int, end: int, *,
                  partial: bool) -> Iterator[bytes]:
    """Audit the download (`copy.downloaded`, with the byte range) and return
    the zip's bytes `start..end` (inclusive), read 1 MiB at a time. Raises
    `StoreUnavailable` if the blob store cannot be read now."""
    row = bundle.request
    stream = archive.blobs.open(bundle.name, start, end)  # before the audit entry: a failure downloads nothing
    audit.record(archive, actor=who.actor, action="copy.downloaded", recording_id=row.recording_id,
                 detail={"request_id": row.id, "bundle_sha256": row.bundle_sha256, "first_byte": start,
                         "last_byte": end, "bundle_size": bundle.size, "partial": partial})
    return _read_range(stream, end - start + 1)


def _read_range(stream, length: int, block: int = 1 << 20) -> Iterator[bytes]:
    with stream:
        left = length
        while left > 0:
            data = stream.read(min(block, left))
            if not data:
                return
            left -= len(data)
            yield data


def _not_ready_message(row: CopyRequest) -> str:
    return {
        "pending": "The request waits for a custodian's decision; there is no bundle yet.",
        "approved": "The request is approved; the bundle will be built shortly (once the recording has a manifest).",
        "building": "The bundle is being built; ask again shortly.",
        "denied": "The request was denied; no bundle exists or will be built.",
        "failed": "Building the bundle failed (see `failure`); a custodian may approve the request again to retry.",
    }.get(row.state, "There is no bundle for this request.")


def _visible_row(archive: Archive, who: StaffMember, request_id: str) -> CopyRequest:
    row = archive.database.fetch_one(CopyRequest, "SELECT * FROM copy_requests WHERE id = ? AND organisation_id = ?",
                                     [request_id, who.organisation_id])
    if row is None or (who.role != CUSTODIAN and row.requested_by != who.username):
        raise NotFound("No such copy request.")
    return row


def public_request(row: CopyRequest) -> dict:
    """A request as the API shows it (its JSON)."""
    ready = row.state == "ready"
    return {
        "request_id": row.id,
        "recording_id": row.recording_id,
        "state": row.state,
        "case_reference": row.case_reference,
        "purpose": row.purpose,
        "requested_by": row.requested_by,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "decided_by": row.decided_by,
        "decided_at": row.decided_at,
        "decision_reason": row.decision_reason,
        "manifest_version": row.manifest_version,
        "failure": row.failure,
        "bundle": {
            "size": row.bundle_size,
            "sha256": row.bundle_sha256,
            "built_at": row.built_at,
            "filename": bundle_filename(row),
            "url": f"/v1/copy-requests/{row.id}/bundle",
        } if ready else None,
    }


def bundle_filename(row: CopyRequest) -> str:
    """What a downloaded bundle is called."""
    return f"witness-copy-{row.recording_id}-{row.id[:8]}.zip"


def bundle_name(request_id: str) -> str:
    """A request's bundle's name in the blob store."""
    return f"{request_id}.zip"


def bundle_path(archive: Archive, request_id: str) -> Path:
    """Where the local-file blob store (the default) keeps a request's bundle."""
    return archive.settings.data_dir / BUNDLES_FOLDER / bundle_name(request_id)


def _text(value, field: str, max_chars: int, *, one_line: bool = False) -> str:
    """A required text field: a string of 1..max_chars characters after
    trimming; printable, with line breaks and tabs allowed unless one_line."""
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= max_chars:
        raise InvalidInput(f"invalid_{field}", _length_rule(field, max_chars))
    value = value.strip()
    allowed = "" if one_line else "\n\t"
    if any(not (ch.isprintable() or ch in allowed) for ch in value.replace("\r\n", "\n")):
        raise InvalidInput(f"invalid_{field}", f"{field} must be printable text"
                                               f"{' on one line' if one_line else ''} (no control characters).")
    return value.replace("\r\n", "\n")


def _length_rule(field: str, max_chars: int) -> str:
    return f"{field} must be text of 1 to {max_chars} characters."


# --- the scheduler's part -------------------------------------------------


def build_approved_bundles(archive: Archive, limit: int = 5) -> list[str]:
    """Build the bundles of approved requests whose recording has a
    manifest, oldest first, one at a time; return the ids made ready. A
    failed build marks its request `failed` with the reason and goes on."""
    made = []
    rows = archive.database.query(
        """SELECT c.id FROM copy_requests c JOIN recordings r ON r.id = c.recording_id
           WHERE c.state = 'approved' AND r.manifest_version IS NOT NULL
           ORDER BY c.decided_at, c.id LIMIT ?""", [limit])
    for row in rows:
        if build_bundle(archive, row["id"]):
            made.append(row["id"])
    return made


def build_bundle(archive: Archive, request_id: str) -> bool:
    """Build one approved request's bundle: `building`, then `ready` (or
    `failed`). The zip is written to a scratch file, then handed to the blob
    store (files: fsync'd and renamed into place; S3: uploaded in parts), so
    a bundle that exists is whole. Returns True when ready."""
    with archive.database.transaction() as db:
        row = db.fetch_one(CopyRequest, "SELECT * FROM copy_requests WHERE id = ?", [request_id])
        if row is None or row.state != "approved":
            return False
        now = archive.now()
        db.execute("UPDATE copy_requests SET state = 'building', updated_at = ? WHERE id = ?", [now, request_id])
        audit.append_entry(db, at=now, actor="system", action="copy.build_started",
                           recording_id=row.recording_id, detail={"request_id": request_id})
    folder = archive.settings.data_dir / SCRATCH_FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    temporary = folder / f"{_TEMP_PREFIX}{request_id}-{secrets.token_hex(4)}.zip"
    try:
        facts = bundle.write_bundle(archive, row, temporary)
        archive.blobs.put_file(bundle_name(request_id), temporary)
    except Exception as exc:
        temporary.unlink(missing_ok=True)
        reason = str(exc) if isinstance(exc, (bundle.BundleFailed, OSError, WitnessError)) \
            else "an unexpected error (logged)"
        log.exception("building the bundle of copy request %s failed", request_id)
        _finish(archive, row, "failed", {"failure": reason}, action="copy.failed", detail={"failure": reason})
        return False
    _finish(archive, row, "ready",
            {"manifest_version": facts.manifest_version, "bundle_size": facts.size,
             "bundle_sha256": facts.sha256, "built_at": facts.built_at},
            action="copy.ready",
            detail={"manifest_version": facts.manifest_version, "bundle_sha256": facts.sha256,
                    "bundle_size": facts.size, "footage_sha256": facts.footage_sha256})
    return True


def _finish(archive: Archive, row: CopyRequest, state: str, columns: dict, *, action: str, detail: dict) -> None:
    with archive.database.transaction() as db:
        now = archive.now()
        assignments = ", ".join(f"{name} = ?" for name in columns)
        db.execute(f"UPDATE copy_requests SET state = ?, updated_at = ?, {assignments} WHERE id = ?",
                   [state, now, *columns.values(), row.id])
        audit.append_entry(db, at=now, actor="system", action=action, recording_id=row.recording_id,
                           detail={"request_id": row.id, **detail})


def resume_interrupted_builds(archive: Archive) -> int:
    """At scheduler take-over: requests left `building` by a process that
    died go back to `approved` (to be built again), and half-written zips
    (scratch files, the blob store's unfinished writes) are removed.
    Returns how many requests were put back."""
    folder = archive.settings.data_dir / SCRATCH_FOLDER
    if folder.is_dir():
        for leftover in folder.glob(f"{_TEMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)
    try:
        archive.blobs.remove_unfinished()
    except (OSError, WitnessError):  # the store is down: the next take-over tries again
        log.warning("could not discard unfinished bundle uploads", exc_info=True)
    with archive.database.transaction() as db:
        rows = list(db.query("SELECT id, recording_id FROM copy_requests WHERE state = 'building'"))
        now = archive.now()
        for row in rows:
            db.execute("UPDATE copy_requests SET state = 'approved', updated_at = ? WHERE id = ?", [now, row["id"]])
            audit.append_entry(db, at=now, actor="system", action="copy.build_interrupted",
                               recording_id=row["recording_id"], detail={"request_id": row["id"]})
    return len(rows)
