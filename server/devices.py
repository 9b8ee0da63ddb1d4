"""The device audience: registration, recordings, chunks, status, complete.
A device token is append-only: nothing here lists, reads or deletes footage."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from sync.domain import accounts, ingest
from sync.errors import ChunkTooLarge, InvalidInput

from .auth import DEVICE, STAFF_ROLES, archive, issue_tokens, require_role
from .device_limits import limited
from .errors import error_response
from .requests import has_body, json_body, path_chunk_index, path_recording_id

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
    answer, created = ingest.create_recording(archive(), g.device_id, json_body())
    return jsonify(answer), 201 if created else 200


@bp.put("/v1/recordings/<recording_id>/chunks/<index>")
@require_role(DEVICE)
@limited()
def put_chunk(recording_id: str, index: str):
    """Upload chunk `index`; answered only once it is durable."""
    recording_id, index = path_recording_id(recording_id), path_chunk_index(index)
    limit = archive().settings.max_chunk_bytes
    # Ownership first, so a foreign recording is 404 whatever the body.
    ingest.owned_recording(archive(), recording_id, g.device_id)
    if request.mimetype != "application/octet-stream":
        return error_response(415, "unsupported_media_type", "Send chunks as Content-Type: application/octet-stream.")
    if request.content_length is not None and request.content_length > limit:
        raise ChunkTooLarge(f"Chunks may be at most {limit} bytes; split the piece.")
    body = _read_body(limit)
    receipt, created = ingest.accept_chunk(
        archive(), g.device_id, recording_id, index, body,
        content_digest=request.headers.get("Content-Digest"),
        final=_final_flag(request.headers.get("Witness-Final")),
        captured_at=request.headers.get("Witness-Captured-At"),
        device_signature=request.headers.get("Witness-Device-Signature"),
    )
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
    # The WSGI input is a raw stream: one read may return less than asked,
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


def _final_flag(header: str | None) -> bool:
    # An RFC 8941 boolean: ?1 or ?0.
    if header is None or header.strip() == "?0":
        return False
    if header.strip() == "?1":
        return True
    raise InvalidInput("invalid_final", "Witness-Final must be the structured boolean ?1 (or ?0).")
