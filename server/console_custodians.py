"""The staff console's pages for custodians: the organisation's people,
devices and enrollment codes, and the audit log. Server-rendered; forms
POST and redirect back with a notice; the same `sync` calls as the API, so
the same rules and the same audit entries."""

from __future__ import annotations

import re

from flask import Blueprint, g, redirect, render_template, request, url_for

from sync.domain import accounts, audit
from sync.domain.ingest import parse_recording_id
from sync.errors import Forbidden, InvalidInput, OwnAccountElsewhere
from sync.timefmt import normalize_time

from .auth import archive
from .pages import register_page_errors, staff_page

bp = Blueprint("console_custodians", __name__)
register_page_errors(bp)
CUSTODIAN = "custodian"
DEVICES_PAGE_SIZE = 50
AUDIT_PAGE_SIZE = 50
AUDIT_FILTERS = ("recording", "actor", "action", "from", "to")

# ?notice=<key> after a form: fixed sentences only, so a link cannot put
# words of its own on a console page.
NOTICES = {
    "staff_created": "The account is made. Give the person their username and initial password by a safe route; "
                     "they can change the password on their Account page.",
    "role_changed": "The role is changed. The person's sessions ended; they log in again to use the new role.",
    "disabled": "The account is disabled. Every session of it ended at once.",
    "enabled": "The account is enabled again. The person logs in again to use it.",
    "password_set": "The new password is set and every session of the account ended. Tell the person by a safe "
                    "route.",
    "totp_reset": "The second factor is reset and every session of the account ended. The person sets up a new "
                  "one on their Account page.",
    "nothing_changed": "Nothing changed: the account was already like that.",
    "device_revoked": "The device is revoked: it can upload nothing more. What it uploaded stays.",
    "code_created": "The enrollment code is made. Share the code or the recorder link below.",
    "code_revoked": "The code is revoked: no new phone can join with it. Phones that joined with it stay.",
}


# What a custodian is told who tries to change their own password or second
# factor here (that needs the current password or a current code).
OWN_ACCOUNT_ELSEWHERE = {
    "password": "Your own password is changed on your Account page, which asks for the current one. Nothing "
                "changed.",
    "second_factor": "Your own second factor is removed on your Account page, with a current code from the app; "
                     "lost the app? Ask another custodian to reset it. Nothing changed.",
}


# -- people -------------------------------------------------------------------

@bp.get("/console/people")
@staff_page(CUSTODIAN)
def people():
    """The organisation's staff accounts, and forms to add and change them."""
    return _people_page()


def _people_page(*, error: str | None = None, form: dict | None = None, status: int = 200):
    found = accounts.list_staff(archive(), g.organisation_id)
    return render_template("console/people.html", people=found, roles=accounts.STAFF_ROLES, form=form or {},
                           notice=NOTICES.get(request.args.get("notice", "")), error=error), status


@bp.post("/console/people")
@staff_page(CUSTODIAN)
def create_person():
    """Add a staff account to the organisation."""
    form = {"username": request.form.get("username", ""), "role": request.form.get("role", "")}
    try:
        accounts.create_staff_user(archive(), form["username"], form["role"], request.form.get("password", ""),
                                   organisation_id=g.organisation_id, actor=g.viewer.actor)
    except InvalidInput as exc:
        return _people_page(error=exc.message, form=form, status=400)
    return redirect(url_for("console_custodians.people", notice="staff_created"))


@bp.post("/console/people/<staff_id>/role")
@staff_page(CUSTODIAN)
def change_role(staff_id: str):
    """Give an account another role."""
    return _change_person(staff_id, {"role": request.form.get("role", "")}, "role_changed")


@bp.post("/console/people/<staff_id>/disable")
@staff_page(CUSTODIAN)
def disable_person(staff_id: str):
    """Disable an account: every session of it ends at once."""
    return _change_person(staff_id, {"disabled": True}, "disabled")


@bp.post("/console/people/<staff_id>/enable")
@staff_page(CUSTODIAN)
def enable_person(staff_id: str):
    """Enable a disabled account again."""
    return _change_person(staff_id, {"disabled": False}, "enabled")


@bp.post("/console/people/<staff_id>/password")
@staff_page(CUSTODIAN)
def set_password(staff_id: str):
    """Set a new password for someone who forgot theirs."""
    return _change_person(staff_id, {"password": request.form.get("password", "")}, "password_set")


@bp.post("/console/people/<staff_id>/reset-second-factor")
@staff_page(CUSTODIAN)
def reset_second_factor(staff_id: str):
    """Reset a lost second factor; the person sets up a new one."""
    return _change_person(staff_id, {"reset_totp": True}, "totp_reset")


def _change_person(staff_id: str, changes: dict, notice: str):
    staff_id = accounts.parse_staff_id(staff_id)
    before = accounts.staff_account(archive(), g.organisation_id, staff_id)
    try:
        after = accounts.update_staff(archive(), g.organisation_id, staff_id, changes, by=g.account)
    except OwnAccountElsewhere as exc:
        return _people_page(error=OWN_ACCOUNT_ELSEWHERE[exc.what], status=403)
    except Forbidden as exc:
        return _people_page(error=exc.message, status=403)
    except InvalidInput as exc:
        return _people_page(error=f"{before['username']}: {exc.message}", status=400)
    if after == before and "password" not in changes:
        notice = "nothing_changed"
    return redirect(url_for("console_custodians.people", notice=notice, _anchor=f"person-{staff_id}"))


# -- devices ------------------------------------------------------------------

@bp.get("/console/devices")
@staff_page(CUSTODIAN)
def devices():
    """The organisation's devices, newest first, by pages."""
    found, next_cursor = accounts.list_devices(archive(), g.organisation_id, limit=DEVICES_PAGE_SIZE,
                                               cursor=request.args.get("cursor") or None)
    return render_template("console/devices.html", devices=found, next_cursor=next_cursor,
                           first_page=not request.args.get("cursor"),
                           notice=NOTICES.get(request.args.get("notice", "")))


@bp.post("/console/devices/<device_id>/revoke")
@staff_page(CUSTODIAN)
def revoke_device(device_id: str):
    """Revoke a device for good: its tokens stop at once; its uploads stay."""
    device_id = accounts.parse_device_id(device_id)
    accounts.revoke_device(archive(), g.organisation_id, device_id, actor=g.viewer.actor)
    return redirect(url_for("console_custodians.devices", notice="device_revoked", _anchor=f"device-{device_id}"))


# -- enrollment codes ---------------------------------------------------------

@bp.get("/console/enrollment-codes")
@staff_page(CUSTODIAN)
def enrollment_codes():
    """The organisation's enrollment codes; a new one shown with its link."""
    return _codes_page()


def _codes_page(*, error: str | None = None, note: str = "", status: int = 200):
    codes = accounts.list_enrollment_codes(archive(), g.organisation_id)
    # ?new= only highlights a code this organisation holds: a link cannot
    # make the page show a code of its own.
    new = next((code for code in codes if code["code"] == request.args.get("new")), None)
    return render_template("console/enrollment_codes.html", codes=codes, new=new, note=note,
                           recorder_url=request.host_url.rstrip("/") + "/record",
                           notice=NOTICES.get(request.args.get("notice", "")), error=error), status


@bp.post("/console/enrollment-codes")
@staff_page(CUSTODIAN)
def create_enrollment_code():
    """Make a code phones join the organisation with."""
    note = request.form.get("note", "").strip()
    try:
        made = accounts.create_enrollment_code(archive(), note, organisation_id=g.organisation_id,
                                               actor=g.viewer.actor)
    except InvalidInput as exc:
        return _codes_page(error=exc.message, note=note, status=400)
    return redirect(url_for("console_custodians.enrollment_codes", notice="code_created", new=made["code"]))


@bp.post("/console/enrollment-codes/<code>/revoke")
@staff_page(CUSTODIAN)
def revoke_enrollment_code(code: str):
    """Stop a code enrolling more phones."""
    accounts.revoke_enrollment_code(archive(), g.organisation_id, code, actor=g.viewer.actor)
    return redirect(url_for("console_custodians.enrollment_codes", notice="code_revoked"))


# -- the audit log ------------------------------------------------------------

@bp.get("/console/audit")
@staff_page(CUSTODIAN)
def audit_log():
    """The audit log, newest first, filtered and by pages."""
    form = {name: request.args.get(name, "").strip() for name in AUDIT_FILTERS}
    shown = {name: value for name, value in form.items() if value}
    try:
        filters = _audit_filter(form)
        entries, next_cursor = audit.list_entries(archive(), g.organisation_id, filters, limit=AUDIT_PAGE_SIZE,
                                                  cursor=request.args.get("cursor") or None)
    except InvalidInput as exc:
        return render_template("console/audit.html", entries=[], next_cursor=None, form=form, filtered=shown,
                               first_page=True, error=exc.message), 400
    return render_template("console/audit.html", entries=entries, next_cursor=next_cursor, form=form,
                           filtered=shown, first_page=not request.args.get("cursor"))


def _audit_filter(form: dict) -> audit.AuditFilter:
    for name in ("actor", "action"):
        if len(form[name]) > 200:
            raise InvalidInput(f"invalid_{name}", f"The {name} filter is at most 200 characters.")
    if form["recording"]:
        try:
            parse_recording_id(form["recording"])
        except InvalidInput:
            raise InvalidInput("invalid_recording", "The recording filter must be a recording's full id, e.g. "
                                                    "0f8e2c1a-5b7d-4e3f-9a6b-2c4d8e1f0a3b.") from None
    since, until = _form_time(form["from"], "From"), _form_time(form["to"], "To", end_of_day=True)
    if since and until and since > until:
        raise InvalidInput("invalid_range", "From is later than To: nothing could match.")
    return audit.AuditFilter(recording_id=form["recording"] or None, actor=_actor(form["actor"]),
                             action=form["action"] or None, since=since, until=until)


def _actor(text: str) -> str | None:
    """`rosa` means the staff member rosa; `device:<id>`, `operator`,
    `system` and `anonymous` are taken as they are."""
    if not text:
        return None
    if ":" in text or text in ("operator", "system", "anonymous"):
        return text
    return f"staff:{text}"


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_ZONELESS = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")


def _form_time(text: str, label: str, *, end_of_day: bool = False) -> str | None:
    """A time typed into a filter: RFC 3339, or a UTC date and time without a
    zone (`2026-11-21 14:03`), or a whole UTC day (`2026-11-21`); a To
    (`end_of_day`) of a day or a minute takes in all of it."""
    if not text:
        return None
    candidate = text
    if _DAY.fullmatch(text):
        candidate = f"{text}T23:59:59.999Z" if end_of_day else f"{text}T00:00:00Z"
    elif _ZONELESS.fullmatch(text):
        # A To that names a minute takes in the whole minute.
        candidate = text + ((":59.999Z" if end_of_day else ":00Z") if text.count(":") == 1 else "Z")
    try:
        return normalize_time(candidate)
    except ValueError:
        raise InvalidInput("invalid_time", f"{label} must be a date (2026-11-21), a UTC date and time "
                                           f"(2026-11-21 14:03) or an RFC 3339 time (2026-11-21T14:03:07Z); "
                                           f"{text!r} is none of these.") from None
