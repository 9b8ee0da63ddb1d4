"""What staff see: their organisation's recordings, listed and filtered, a
recording's detail, its footage and manifests. Every look at a recording
(detail, footage, manifest) leaves an entry in the audit log; lists and
upload status, which consoles poll, do not.

A recording of another organisation is `NotFound`, exactly like one that
does not exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from ..archive import Archive
from ..errors import InvalidInput, NotFound, NotReady
from ..records.rows import Chunk, Manifest, Recording
from ..timefmt import parse_time
from . import audit, finalize, footage
from .ingest import index_ranges, missing_ranges
from .paging import newest_first_page

RECORDING_STATES = ("receiving", "complete", "interrupted")
# Gaps exist when fewer chunks are held than the recording's known length
# (the final index, else the highest index held, plus one).
_HAS_GAPS = "chunk_count < COALESCE(final_index, max_index, -1) + 1"


@dataclass(frozen=True)
class Viewer:
    """A staff member looking: who (for the audit log) and from which
    organisation (what they may see)."""

    actor: str
    organisation_id: int


@dataclass(frozen=True)
class RecordingFilter:
    """Narrows `list_recordings`; every field optional.

    `since`/`until` keep recordings that were being received at some moment
    in that span (from creation to the last chunk held)."""

    states: tuple[str, ...] = ()
    device_id: str | None = None
    since: str | None = None
    until: str | None = None
    has_gaps: bool | None = None
    receiving: bool | None = None


def parse_states(text: str | None) -> tuple[str, ...]:
    """`state` query value: one state or several, comma-separated."""
    if text is None:
        return ()
    states = tuple(part.strip() for part in text.split(","))
    if not all(state in RECORDING_STATES for state in states):
        raise InvalidInput("invalid_state", f"state must be one or more of {', '.join(RECORDING_STATES)}, "
                                            "comma-separated.")
    return states


def list_recordings(archive: Archive, viewer: Viewer, filters: RecordingFilter, *, limit: int = 50,
                    cursor: str | None = None) -> tuple[list[dict], str | None]:
    """A page of the viewer's organisation's recordings, newest first, and
    the cursor of the next page (None at the end). Raises `InvalidInput` for
    a malformed cursor."""
    where, params = ["organisation_id = ?"], [viewer.organisation_id]
    if filters.states:
        where.append(f"state IN ({', '.join('?' for _ in filters.states)})")
        params += list(filters.states)
    if filters.receiving is not None:
        where.append("state = 'receiving'" if filters.receiving else "state != 'receiving'")
    if filters.device_id is not None:
        where.append("device_id = ?")
        params.append(filters.device_id)
    if filters.until is not None:
        where.append("created_at <= ?")
        params.append(filters.until)
    if filters.since is not None:
        where.append("COALESCE(last_received_at, created_at) >= ?")
        params.append(filters.since)
    if filters.has_gaps is not None:
        where.append(_HAS_GAPS if filters.has_gaps else f"NOT ({_HAS_GAPS})")
    rows, next_cursor = newest_first_page(archive.database, "recordings", where, params, kind="recordings",
                                          limit=limit, cursor=cursor)
    return [recording_summary(Recording.of(row)) for row in rows], next_cursor


def recording_summary(row: Recording) -> dict:
    """A recording as lists show it."""
    known_length = row.final_index if row.final_index is not None else row.max_index
    missing = (known_length + 1 - row.chunk_count) if known_length is not None else 0
    return {
        "recording_id": row.id,
        "device_id": row.device_id,
        "state": row.state,
        "content_type": row.content_type,
        "started_at": row.started_at,
        "created_at": row.created_at,
        "first_received_at": row.first_received_at,
        "last_received_at": row.last_received_at,
        "chunks_held": row.chunk_count,
        "final_index": row.final_index,
        "missing_chunks": missing,
        "has_gaps": missing > 0,
        "footage_size": row.footage_size,
        "manifest_version": row.manifest_version,
    }


def estimated_durations(archive: Archive, recording_ids: list[str]) -> dict[str, float | None]:
    """About how many seconds each recording covers: from its start to the
    capture time of the newest chunk held, both by the device's clock (so a
    backlog uploaded later does not stretch it). A recording whose chunks
    carry no capture time falls back to the span over which chunks arrived;
    one with no chunk yet is None. Not audited (lists are polled)."""
    if not recording_ids:
        return {}
    rows = archive.database.query(
        "SELECT r.id, r.started_at, r.first_received_at, r.last_received_at, c.captured_at "
        "FROM recordings r LEFT JOIN chunks c ON c.recording_id = r.id AND c.idx = r.max_index "
        f"WHERE r.id IN ({', '.join('?' for _ in recording_ids)})", list(recording_ids))
    durations = {}
    for row in rows:
        start, end = (row["started_at"], row["captured_at"]) if row["captured_at"] \
            else (row["first_received_at"], row["last_received_at"])
        durations[row["id"]] = None if not (start and end) else \
            max(0.0, (parse_time(end) - parse_time(start)).total_seconds())
    return durations


def recording_detail(archive: Archive, viewer: Viewer, recording_id: str) -> dict:
    """Everything known about one recording: its summary, every chunk (sizes,
    hashes, received and captured times), received and missing index ranges,
    and every manifest version. Audited as `recording.viewed`. Raises
    `NotFound`."""
    with archive.database.snapshot() as db:
        row = db.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ? AND organisation_id = ?",
                           [recording_id, viewer.organisation_id])
        if row is None:
            raise NotFound("No such recording.")
        chunks = db.fetch(Chunk, "SELECT * FROM chunks WHERE recording_id = ? ORDER BY idx", [recording_id])
        manifests = list(db.query("SELECT version, state, sha256, created_at FROM manifests "
                                  "WHERE recording_id = ? ORDER BY version", [recording_id]))
    received = index_ranges(chunk.idx for chunk in chunks)
    audit.record(archive, actor=viewer.actor, action="recording.viewed", recording_id=recording_id)
    return {
        **recording_summary(row),
        "complete_requested_at": row.complete_requested_at,
        "received": received,
        "missing": missing_ranges(received, row.final_index),
        "chunks": [
            {
                "index": chunk.idx,
                "final": bool(chunk.final),
                "size": chunk.size,
                "ciphertext_size": chunk.ciphertext_size,
                "sha256": chunk.sha256,
                "ciphertext_sha256": chunk.ciphertext_sha256,
                "received_at": chunk.received_at,
                "captured_at": chunk.captured_at,
                "device_signed": chunk.device_signature is not None,
            }
            for chunk in chunks
        ],
        "manifests": manifests,
    }


@dataclass(frozen=True)
class FootageView:
    """The part of a recording's footage a request asked for, as held when
    the request came: what a response streams, whatever arrives meanwhile."""

    part: footage.FootageSlice

    @property
    def recording(self) -> Recording:
        return self.part.recording

    @property
    def size(self) -> int:
        return self.part.size

    @property
    def content_type(self) -> str:
        return self.part.recording.content_type

    @property
    def etag(self) -> str:
        return footage_etag(self.part.recording, self.part.size)


def footage_etag(recording: Recording, size: int) -> str:
    # Changes whenever a chunk is added or taken out.
    return f'"{recording.generation}-{size}"'


def footage_view(archive: Archive, viewer: Viewer, recording_id: str,
                 pick: Callable[[int, str], tuple[int, int]] | None = None) -> FootageView:
    """The recording's footage for a viewer: `pick(size, etag)` chooses the
    inclusive byte range wanted (a `Range` header read against the size
    and ETag of that moment; default: everything), and only the chunks that
    range overlaps are read. Raises `NotFound`, and whatever `pick` raises."""
    def choose(recording: Recording, size: int) -> tuple[int, int]:
        if recording.organisation_id != viewer.organisation_id:
            raise NotFound("No such recording.")
        return pick(size, footage_etag(recording, size)) if pick is not None else (0, size - 1)

    return FootageView(footage.footage_slice(archive, recording_id, choose))


def stream_footage(archive: Archive, viewer: Viewer, view: FootageView, *, partial: bool) -> Iterator[bytes]:
    """Audit the look (`footage.streamed`, with the byte range) and return
    the view's footage bytes, decrypted one chunk at a time. The iterator
    raises `footage.FootageDamaged` on a damaged chunk."""
    part = view.part
    audit.record(archive, actor=viewer.actor, action="footage.streamed", recording_id=part.recording.id,
                 detail={"first_byte": part.start, "last_byte": part.end, "footage_size": part.size,
                         "partial": partial})
    if part.size == 0 or part.end < part.start:
        return iter(())
    return footage.iter_footage(archive, part)


def manifest_for(archive: Archive, viewer: Viewer, recording_id: str, version: int | None, *,
                 part: str) -> Manifest:
    """A signed manifest version (`finalize.signed_manifest`), audited as
    `manifest.downloaded` with `part` (`manifest`, `signature`,
    `timestamp` or `external_timestamp`). Raises `NotFound` and `NotReady`
    as `signed_manifest` does, and `NotFound` for the time-stamp of a
    version made before the server had a time-stamping authority. For the
    external TSA's token: `NotReady` while it has not been obtained yet,
    `NotFound` when the server has no external TSA and the version none."""
    row = finalize.signed_manifest(archive, recording_id, version, organisation_id=viewer.organisation_id)
    if part == "timestamp" and row.tsr is None:
        raise NotFound(f"Manifest version {row.version} was made before this server time-stamped manifests.")
    if part == "external_timestamp" and row.external_tsr is None:
        if archive.settings.tsa_url is None:
            raise NotFound("This server has no external time-stamping authority (WITNESS_TSA_URL is not set), "
                           f"and manifest version {row.version} has no token from one.")
        raise NotReady(f"Manifest version {row.version} has no token from the external time-stamping authority "
                       "yet: the server asks for one in the background and keeps trying while it is unreachable. "
                       "Try again later.")
    audit.record(archive, actor=viewer.actor, action="manifest.downloaded", recording_id=recording_id,
                 detail={"version": row.version, "part": part, "manifest_sha256": row.sha256})
    return row
