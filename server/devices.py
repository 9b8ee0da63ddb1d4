"""The device audience: registration, recordings, chunks, status, complete.
A device token is append-only: nothing here lists, reads or deletes footage."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected

from sync.domain import accounts, ingest
from sync.errors import ChunkTooLarge, InvalidInput
from sync.timefmt import normalize_time

from .auth import DEVICE, STAFF_ROLES, archive, issue_tokens, require_role
from .device_limits import limited
from .errors import error_response
from .requests import (
    RECORDING_MEDIA_TYPE,
    content_digest_sha256,
    final_flag,
    has_body,
    header_time,
    json_body,
    path_chunk_index,
    path_recording_id,
)

bp = Blueprint("devices", __name__)


@bp.post("/v1/devices")
def register_device():
    """Anonymous device registration; answers the device's tokens."""
    body = json_body() if has_body() else {}
    device_id = accounts.register_device(
        archive(), enrollment_code=body.get("enrollment_code"), public_key_pem=body.get("public_key_pem")
    )
    return jsonify(device_id=device_id, **issue_tokens(f"device:{device_id}", DEVICE)), 201


@bp.post("/v1/recordings")
@require_role(DEVICE)
@limited(new_recording=True)
def create_recording():
    """Create a recording (idempotent for the identical body)."""
    answer, created = ingest.create_recording(archive(), g.device_id, _new_recording(json_body()))
    return jsonify(answer), 201 if created else 200


@bp.put("/v1/recordings/<recording_id>/chunks/<index>")
@require_role(DEVICE)
@limited()
def put_chunk(recording_id: str, index: str):
    """Upload chunk `index`; answered only once it is durable."""
    recording_id, index = path_recording_id(recording_id), path_chunk_index(index)
    limit = archive().settings.max_chunk_bytes
    # Ownership first, so a foreign recording is 404 whatever the body.
    recording = ingest.owned_recording(archive(), recording_id, g.device_id)
    if request.mimetype != "application/octet-stream":
        return error_response(415, "unsupported_media_type", "Send chunks as Content-Type: application/octet-stream.")
    if request.content_length is not None and request.content_length > limit:
        raise ChunkTooLarge(f"Chunks may be at most {limit} bytes; split the piece.")
    body = _read_body(limit)
    final = final_flag(request.headers.get("Witness-Final"))
    upload = ingest.ChunkUpload(
        recording_id, index, body,
        digest=content_digest_sha256(request.headers.get("Content-Digest")),
        final=final,
        captured_at=header_time(request.headers.get("Witness-Captured-At"), "invalid_captured_at",
                                "Witness-Captured-At"),
        device_signature=request.headers.get("Witness-Device-Signature"),
    )
    receipt, created = ingest.accept_chunk(archive(), g.device_id, upload, recording=recording, device=g.account)
    return jsonify(receipt), 201 if created else 200


@bp.get("/v1/recordings/<recording_id>/status")
@require_role(DEVICE, *STAFF_ROLES)
@limited()
def recording_status(recording_id: str):
    """Upload status, for resuming (owning device or staff)."""
    return jsonify(ingest.recording_status(archive(), path_recording_id(recording_id), device_id=g.device_id,
                                           organisation_id=g.organisation_id))


@bp.post("/v1/recordings/<recording_id>/complete")
@require_role(DEVICE)
@limited()
def complete_recording(recording_id: str):
    """The device stopped normally; finalize once all chunks are held."""
    return jsonify(ingest.request_completion(archive(), g.device_id, path_recording_id(recording_id))), 202


def _read_body(limit: int) -> bytes:
    length = request.content_length
    if length is not None:
        # The length is known (always, behind the front door, which buffers
        # bodies) and already checked against the limit: one read of the
        # server's input, which returns the whole body or what came before
        # the client went away.
        body = request.environ["wsgi.input"].read(length)
        if len(body) != length:
            raise ClientDisconnected()
        return body
    # A chunked body (gunicorn alone): one read may return less than asked,
    # so read until the end, refusing as soon as the body passes the limit.
    parts, size = [], 0
    while True:
        part = request.stream.read(min(1 << 20, limit + 1 - size))
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
        if size > limit:
            raise ChunkTooLarge(f"Chunks may be at most {limit} bytes; split the piece.")


def _new_recording(body: dict) -> ingest.NewRecording:
    """`POST /v1/recordings`'s JSON body as the domain's command; each field
    checked in the order PROTOCOL.md lists them."""
    recording_id = path_recording_id(body.get("recording_id"))
    content_type = body.get("content_type")
    if not isinstance(content_type, str) or len(content_type) > 255 or \
            not RECORDING_MEDIA_TYPE.fullmatch(content_type):
        raise InvalidInput("invalid_content_type", "content_type must be a video/* or audio/* media type.")
    try:
        started_at = normalize_time(body.get("started_at"))
    except (ValueError, TypeError):
        raise InvalidInput("invalid_started_at",
                           "started_at must be an RFC 3339 time, e.g. 2026-11-21T14:03:07.123Z.") from None
    key_id = body.get("key_id")
    if not isinstance(key_id, str):
        raise InvalidInput("invalid_key_id", "key_id must be the hpke key_id from GET /v1/keys.")
    sealed_key = ingest.b64url_decode(body.get("sealed_key"), "sealed_key")
    return ingest.NewRecording(recording_id, content_type, started_at, key_id, sealed_key)
