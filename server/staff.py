"""The staff audience: manifests and footage of a recording."""

from __future__ import annotations

import itertools
import re

from flask import Blueprint, Response, request

from sync import finalize, footage

from .auth import STAFF_ROLES, archive, require_role
from .errors import error_response
from .requests import path_recording_id, query_positive_int

bp = Blueprint("staff", __name__)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@bp.get("/v1/recordings/<recording_id>/manifest")
@require_role(*STAFF_ROLES)
def manifest(recording_id: str):
    """The exact signed manifest bytes (latest, or `?version=n`)."""
    row = finalize.signed_manifest(archive(), path_recording_id(recording_id), query_positive_int("version"))
    return Response(row["body"], mimetype="application/json",
                    headers={"Witness-Manifest-Version": str(row["version"]), "ETag": f'"{row["sha256"]}"'})


@bp.get("/v1/recordings/<recording_id>/manifest.sig")
@require_role(*STAFF_ROLES)
def manifest_signature(recording_id: str):
    """The raw 64-byte Ed25519 signature over the manifest bytes."""
    row = finalize.signed_manifest(archive(), path_recording_id(recording_id), query_positive_int("version"))
    return Response(row["signature"], mimetype="application/octet-stream",
                    headers={"Witness-Manifest-Version": str(row["version"])})


@bp.get("/v1/recordings/<recording_id>/media")
@require_role(*STAFF_ROLES)
def media(recording_id: str):
    """The decrypted footage as held so far; honours a single `Range`."""
    recording, rows, total = footage.footage_layout(archive(), path_recording_id(recording_id))
    etag = f'"{recording["generation"]}-{total}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Cache-Control": "private, no-store"}
    start, end, status = 0, total - 1, 200
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header and (if_range is None or if_range == etag):
        match = _RANGE.match(range_header.strip())
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
    pieces = footage.iter_footage_range(archive(), recording, rows, start, end) if total else iter(())
    # Decrypt the first piece before the headers go out, so a damaged chunk
    # there is still a JSON error. Damage found later can only cut the body
    # short of its Content-Length, which every HTTP client reports as an error.
    first = next(pieces, b"")
    return Response(itertools.chain([first], pieces), status=status, mimetype=None, content_type=recording["content_type"], headers=headers)
