"""The custodian audience: the organisation's people (staff accounts), its
devices and enrollment codes, and the audit log."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from sync.domain import accounts, audit
from sync.domain.ingest import parse_recording_id
from sync.errors import InvalidInput

from .auth import archive, require_role
from .requests import json_body, query_limit, query_text, query_time

bp = Blueprint("custodians", __name__)
CUSTODIAN = "custodian"


@bp.get("/v1/staff")
@require_role(CUSTODIAN)
def list_staff():
    """The organisation's staff accounts."""
    return jsonify(staff=accounts.list_staff(archive(), g.organisation_id))


@bp.post("/v1/staff")
@require_role(CUSTODIAN)
def create_staff():
    """Create a staff account in the custodian's organisation."""
    body = json_body()
    account = accounts.create_staff_user(archive(), body.get("username"), body.get("role"), body.get("password"),
                                         organisation_id=g.organisation_id, actor=g.viewer.actor)
    return jsonify(account), 201


@bp.get("/v1/staff/<staff_id>")
@require_role(CUSTODIAN)
def staff_account(staff_id: str):
    """One staff account."""
    return jsonify(accounts.staff_account(archive(), g.organisation_id, accounts.parse_staff_id(staff_id)))


@bp.patch("/v1/staff/<staff_id>")
@require_role(CUSTODIAN)
def update_staff(staff_id: str):
    """Change a role, disable or enable, set a password, reset TOTP."""
    return jsonify(accounts.update_staff(archive(), g.organisation_id, accounts.parse_staff_id(staff_id),
                                         json_body(), by=g.account))


@bp.get("/v1/devices")
@require_role(CUSTODIAN)
def list_devices():
    """The organisation's devices, newest first, by pages."""
    devices, next_cursor = accounts.list_devices(archive(), g.organisation_id, limit=query_limit(),
                                                 cursor=request.args.get("cursor"))
    return jsonify(devices=devices, next_cursor=next_cursor)


@bp.get("/v1/devices/<device_id>")
@require_role(CUSTODIAN)
def device_detail(device_id: str):
    """One device of the organisation."""
    return jsonify(accounts.device_detail(archive(), g.organisation_id, accounts.parse_device_id(device_id)))


@bp.post("/v1/devices/<device_id>/revoke")
@require_role(CUSTODIAN)
def revoke_device(device_id: str):
    """Revoke a device: its tokens stop at once; its uploads stay."""
    return jsonify(accounts.revoke_device(archive(), g.organisation_id, accounts.parse_device_id(device_id),
                                          actor=g.viewer.actor))


@bp.get("/v1/enrollment-codes")
@require_role(CUSTODIAN)
def list_enrollment_codes():
    """The organisation's enrollment codes."""
    return jsonify(enrollment_codes=accounts.list_enrollment_codes(archive(), g.organisation_id))


@bp.post("/v1/enrollment-codes")
@require_role(CUSTODIAN)
def create_enrollment_code():
    """A new code that enrolls devices into the organisation."""
    body = json_body()
    code = accounts.create_enrollment_code(archive(), body.get("note", ""), organisation_id=g.organisation_id,
                                           actor=g.viewer.actor)
    return jsonify(code), 201


@bp.post("/v1/enrollment-codes/<code>/revoke")
@require_role(CUSTODIAN)
def revoke_enrollment_code(code: str):
    """Stop a code from enrolling more devices."""
    return jsonify(accounts.revoke_enrollment_code(archive(), g.organisation_id, code, actor=g.viewer.actor))


@bp.get("/v1/audit")
@require_role(CUSTODIAN)
def audit_log():
    """The audit log: filter by recording, actor, action, time; by pages."""
    recording_id = request.args.get("recording_id")
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidInput("invalid_order", "order must be asc (oldest first) or desc (newest first).")
    filters = audit.AuditFilter(
        recording_id=parse_recording_id(recording_id) if recording_id is not None else None,
        actor=query_text("actor"),
        action=query_text("action"),
        since=query_time("from"),
        until=query_time("to"),
    )
    entries, next_cursor = audit.list_entries(archive(), g.organisation_id, filters, limit=query_limit(100, 500),
                                              cursor=request.args.get("cursor"), newest_first=order == "desc")
    return jsonify(entries=entries, next_cursor=next_cursor)
