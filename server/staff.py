"""The staff audience: find recordings, look at one, watch its footage, fetch
its signed manifests. Every look at a recording is audited (in `sync`)."""

from __future__ import annotations

import itertools

from flask import Blueprint, Response, g, jsonify, request

from sync.domain import retrieval
from sync.domain.accounts import parse_device_id
from sync.errors import InvalidInput

from .auth import STAFF_ROLES, archive, require_role
from .ranges import requested_range
from .requests import path_recording_id, query_bool, query_limit, query_positive_int, query_time

bp = Blueprint("staff", __name__)


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
@require_role(*STAFF_ROLES, console_cookie=True)
def manifest(recording_id: str):
    """The exact signed manifest bytes (latest, or `?version=n`)."""
    row = retrieval.manifest_for(archive(), g.viewer, path_recording_id(recording_id), query_positive_int("version"),
                                 part="manifest")
    return Response(row.body, mimetype="application/json",
                    headers={"Witness-Manifest-Version": str(row.version), "ETag": f'"{row.sha256}"'})


@bp.get("/v1/recordings/<recording_id>/manifest.sig")
@require_role(*STAFF_ROLES, console_cookie=True)
def manifest_signature(recording_id: str):
    """The raw 64-byte Ed25519 signature over the manifest bytes."""
    return _manifest_part(recording_id, "signature", "signature", "application/octet-stream")


@bp.get("/v1/recordings/<recording_id>/manifest.tsr")
@require_role(*STAFF_ROLES, console_cookie=True)
def manifest_timestamp(recording_id: str):
    """The RFC 3161 time-stamp response over the manifest bytes' SHA-256:
    the built-in TSA's, or the external TSA's with `?tsa=external`."""
    tsa = request.args.get("tsa", "builtin")
    if tsa not in _TIME_STAMPS:
        raise InvalidInput("invalid_tsa", "tsa must be builtin (the default) or external.")
    part, field = _TIME_STAMPS[tsa]
    return _manifest_part(recording_id, part, field, "application/timestamp-reply")


# ?tsa= -> (the audited part, the manifest row's field)
_TIME_STAMPS = {"builtin": ("timestamp", "tsr"), "external": ("external_timestamp", "external_tsr")}


def _manifest_part(recording_id: str, part: str, field: str, mimetype: str) -> Response:
    row = retrieval.manifest_for(archive(), g.viewer, path_recording_id(recording_id), query_positive_int("version"),
                                 part=part)
    return Response(getattr(row, field), mimetype=mimetype, headers={"Witness-Manifest-Version": str(row.version)})


@bp.get("/v1/recordings/<recording_id>/media")
@require_role(*STAFF_ROLES, console_cookie=True)
def media(recording_id: str):
    """The decrypted footage as held so far; honours a single `Range`."""
    def pick(size: int, etag: str) -> tuple[int, int]:
        chosen = requested_range(size, etag)
        return chosen.start, chosen.end

    view = retrieval.footage_view(archive(), g.viewer, path_recording_id(recording_id), pick)
    wanted = requested_range(view.size, view.etag)  # the same answer pick gave, for its headers
    headers = {**wanted.headers(), "ETag": view.etag, "Cache-Control": "private, no-store"}
    if request.method == "HEAD":  # headers only: nothing is streamed, nothing audited
        return Response(status=wanted.status, content_type=view.content_type, headers=headers)
    pieces = retrieval.stream_footage(archive(), g.viewer, view, partial=wanted.partial)
    # Decrypt the first piece before the headers go out, so a damaged chunk
    # there is still a JSON error. Damage found later can only cut the body
    # short of its Content-Length, which every HTTP client reports as an error.
    first = next(pieces, b"")
    return Response(itertools.chain([first], pieces), status=wanted.status, content_type=view.content_type,
                    headers=headers)
