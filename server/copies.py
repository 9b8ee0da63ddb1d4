"""The copies audience: lawyers request signed copies of recordings and
download the bundles; custodians approve or deny. The domain rules (who sees
what, the states, the audit entries) live in `sync.copies`."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from sync.domain import copies
from sync.domain.ingest import parse_recording_id

from .auth import archive, require_role
from .ranges import requested_range
from .requests import has_body, json_body, path_recording_id, query_limit

bp = Blueprint("copies", __name__)
LAWYER, CUSTODIAN = copies.LAWYER, copies.CUSTODIAN


def _who() -> copies.StaffMember:
    return copies.StaffMember(username=g.account.username, role=g.role, organisation_id=g.organisation_id)


@bp.post("/v1/recordings/<recording_id>/copy-requests")
@require_role(LAWYER)
def request_copy(recording_id: str):
    """A lawyer asks for a signed copy, with a case reference and purpose."""
    recording_id = path_recording_id(recording_id)
    body = json_body()
    new = copies.NewCopyRequest(body.get("case_reference"), body.get("purpose"))
    return jsonify(copies.request_copy(archive(), _who(), recording_id, new)), 201


@bp.get("/v1/copy-requests")
@require_role(LAWYER, CUSTODIAN)
def list_copy_requests():
    """A lawyer's own requests, or all of the organisation's for a custodian."""
    recording_id = request.args.get("recording_id")
    found, next_cursor = copies.list_copy_requests(
        archive(), _who(), state=request.args.get("state"),
        recording_id=parse_recording_id(recording_id) if recording_id is not None else None,
        limit=query_limit(), cursor=request.args.get("cursor"))
    return jsonify(copy_requests=found, next_cursor=next_cursor)


@bp.get("/v1/copy-requests/<request_id>")
@require_role(LAWYER, CUSTODIAN)
def copy_request(request_id: str):
    """One request: its state, decision and, once ready, its bundle."""
    return jsonify(copies.copy_request(archive(), _who(), copies.parse_request_id(request_id)))


@bp.post("/v1/copy-requests/<request_id>/approve")
@require_role(CUSTODIAN)
def approve(request_id: str):
    """Approve (optionally with a `reason`); the bundle is then built."""
    request_id = copies.parse_request_id(request_id)
    body = json_body() if has_body() else {}
    return jsonify(copies.approve(archive(), _who(), request_id, copies.Decision(body.get("reason"))))


@bp.post("/v1/copy-requests/<request_id>/deny")
@require_role(CUSTODIAN)
def deny(request_id: str):
    """Deny, with a `reason`; no bundle is ever built."""
    request_id = copies.parse_request_id(request_id)
    decision = copies.Decision(json_body().get("reason"))
    return jsonify(copies.deny(archive(), _who(), request_id, decision))


@bp.get("/v1/copy-requests/<request_id>/bundle")
@require_role(LAWYER, CUSTODIAN, console_cookie=True)
def bundle(request_id: str):
    """The bundle zip, once ready; a single `Range` is honoured, so an
    interrupted download can resume."""
    found = copies.ready_bundle(archive(), _who(), copies.parse_request_id(request_id))
    wanted = requested_range(found.size, found.etag)
    headers = {**wanted.headers(), "ETag": found.etag, "Cache-Control": "private, no-store",
               "Content-Disposition": f'attachment; filename="{copies.bundle_filename(found.request)}"'}
    if request.method == "HEAD":  # headers only: nothing is downloaded, nothing audited
        return Response(status=wanted.status, mimetype="application/zip", headers=headers)
    body = copies.stream_bundle(archive(), _who(), found, wanted.start, wanted.end, partial=wanted.partial)
    return Response(body, status=wanted.status, mimetype="application/zip", headers=headers)
