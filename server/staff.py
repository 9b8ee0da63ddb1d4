"""The staff audience: find recordings, look at one, watch its footage, fetch
its signed manifests. Every look at a recording is audited (in `sync`)."""

from __future__ import annotations

import itertools
import re

from flask import Blueprint, Response, g, jsonify, request

from sync import retrieval
from sync.accounts import parse_device_id

from .auth import STAFF_ROLES, archive, require_role
from .errors import error_response
from .requests import path_recording_id, query_bool, query_limit, query_positive_int, query_time

bp = Blueprint("staff", __name__)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@bp.get("/v1/recordings")
@require_role(*STAFF_ROLES)
def list_recordings():
    """The organisation's recordings, newest first, filtered, by pages."""
    device_id = request.args.get("device_id")
    filters = retrieval.RecordingFilter(
        states=retrieval.parse_states(request.args.get("state")),
        device_id=parse_device_id(device_id) if device_id is not None else None,
        since=query_time("from"),
        until=query_time("to"),
        has_gaps=query_bool("has_gaps"),
        receiving=query_bool("receiving"),
    )
    recordings, next_cursor = retrieval.list_recordings(archive(), g.viewer, filters, limit=query_limit(),
                                                        cursor=request.args.get("cursor"))
    return jsonify(recordings=recordings, next_cursor=next_cursor)


@bp.get("/v1/recordings/<recording_id>")
@require_role(*STAFF_ROLES)
def recording_detail(recording_id: str):
    """One recording: chunks, gaps, manifest versions."""
    return jsonify(retrieval.recording_detail(archive(), g.viewer, path_recording_id(recording_id)))


@bp.get("/v1/recordings/<recording_id>/manifest")
@require_role(*STAFF_ROLES)
def manifest(recording_id: str):
    """The exact signed manifest bytes (latest, or `?version=n`)."""
    row = retrieval.manifest_for(archive(), g.viewer, path_recording_id(recording_id), query_positive_int("version"),
                                 part="manifest")
    return Response(row["body"], mimetype="application/json",
                    headers={"Witness-Manifest-Version": str(row["version"]), "ETag": f'"{row["sha256"]}"'})


@bp.get("/v1/recordings/<recording_id>/manifest.sig")
@require_role(*STAFF_ROLES)
def manifest_signature(recording_id: str):
    """The raw 64-byte Ed25519 signature over the manifest bytes."""
    return _manifest_part(recording_id, "signature", "signature", "application/octet-stream")


@bp.get("/v1/recordings/<recording_id>/manifest.tsr")
@require_role(*STAFF_ROLES)
def manifest_timestamp(recording_id: str):
    """The RFC 3161 time-stamp response over the manifest bytes' SHA-256."""
    return _manifest_part(recording_id, "timestamp", "tsr", "application/timestamp-reply")


def _manifest_part(recording_id: str, part: str, field: str, mimetype: str) -> Response:
    row = retrieval.manifest_for(archive(), g.viewer, path_recording_id(recording_id), query_positive_int("version"),
                                 part=part)
    return Response(row[field], mimetype=mimetype, headers={"Witness-Manifest-Version": str(row["version"])})


@bp.get("/v1/recordings/<recording_id>/media")
@require_role(*STAFF_ROLES)
def media(recording_id: str):
    """The decrypted footage as held so far; honours a single `Range`."""
    view = retrieval.footage_view(archive(), g.viewer, path_recording_id(recording_id))
    total = view.size
    headers = {"Accept-Ranges": "bytes", "ETag": view.etag, "Cache-Control": "private, no-store"}
    start, end, status = 0, total - 1, 200
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header and (if_range is None or if_range == view.etag):
        match = _RANGE.match(range_header.strip())
        # Anything but one well-formed byte range is ignored (RFC 9110 allows
        # answering 200 with the whole footage), e.g. several ranges at once.
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
            else:  # suffix range: the last N bytes
                start, end = max(total - int(match.group(2)), 0), total - 1
            if start >= total or start > end:
                return error_response(416, "range_not_satisfiable",
                                      f"The footage is {total} bytes; ask for a range inside it.",
                                      {"Content-Range": f"bytes */{total}", **headers})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
    headers["Content-Length"] = str(max(end - start + 1, 0))
    pieces = retrieval.stream_footage(archive(), g.viewer, view, start, end, partial=status == 206)
    # Decrypt the first piece before the headers go out, so a damaged chunk
    # there is still a JSON error. Damage found later can only cut the body
    # short of its Content-Length, which every HTTP client reports as an error.
    first = next(pieces, b"")
    return Response(itertools.chain([first], pieces), status=status, content_type=view.content_type,
                    headers=headers)
