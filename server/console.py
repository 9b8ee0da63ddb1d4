"""The staff console's pages for everyone on staff: log in, find recordings
(a list that updates while they arrive), look at one (player, arrival
timeline, manifest versions), and the copy-request path (a lawyer asks, a
custodian decides, the bundle is downloaded). Server-rendered; forms POST
and redirect back; the same `sync` calls as the API, so the same rules and
the same audit entries."""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for

from sync.domain import copies, logins, retrieval
from sync.domain.accounts import parse_device_id
from sync.errors import (
    BadCredentials,
    InvalidInput,
    SecondFactorRequired,
    TooManyAttempts,
)

from .auth import archive
from .clients import client_key
from .pages import (
    end_console_session,
    login_form_is_genuine,
    register_page_errors,
    safe_next,
    staff_page,
    start_console_session,
    wait_in_words,
)
from .requests import path_recording_id

bp = Blueprint("console", __name__)
register_page_errors(bp)
LAWYER, CUSTODIAN = copies.LAWYER, copies.CUSTODIAN
PAGE_SIZE = 50

# ?notice=<key> after a form: fixed sentences only, so a link cannot put
# words of its own on a console page.
NOTICES = {
    "requested": "Your request is with the custodians. You will find the bundle here once it is approved and built.",
    "approved": "Approved. The bundle is being built; this page shows when it is ready.",
    "denied": "Denied. No bundle will be built for this request.",
}


@bp.get("/")
def home():
    """The server's front page: where witnesses record and staff log in."""
    return render_template("console/home.html")


@bp.get("/console/")
def console_home():
    """The console starts at the recordings list."""
    return redirect(url_for("console.recordings"))


@bp.route("/console/login", methods=["GET", "POST"])
def login():
    """Log in with username, password and, when the account has one, the
    code from the authenticator app. The form carries its own CSRF value
    (there is no session yet to take one from)."""
    next_path = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("console/login.html", next=next_path, username="", needs_code=False)
    username = request.form.get("username", "")
    if not login_form_is_genuine():
        # Nothing is checked: a form another site made the browser send must
        # not log it in to anybody's account.
        return render_template("console/login.html", next=next_path, username="", needs_code=False,
                               error="This form has expired or did not come from this console. Log in again "
                                     "here."), 400
    try:
        account = logins.authenticate_staff(archive(), username, request.form.get("password", ""),
                                            request.form.get("totp") or None, client=client_key())
    except SecondFactorRequired:
        return render_template("console/login.html", next=next_path, username=username, needs_code=True,
                               error="This account uses a second factor: enter your password again and the "
                                     "6-digit code from your authenticator app."), 401
    except TooManyAttempts as exc:
        return render_template("console/login.html", next=next_path, username=username,
                               needs_code=bool(request.form.get("totp")),
                               error=f"Too many failed attempts for this username from here. Wait "
                                     f"{wait_in_words(exc.retry_after)}, then try again."), 429, \
            {"Retry-After": str(exc.retry_after)}
    except BadCredentials:
        return render_template("console/login.html", next=next_path, username=username,
                               needs_code=bool(request.form.get("totp")),
                               error="Wrong username, password or code."), 401
    return start_console_session(redirect(next_path or url_for("console.recordings")), account)


@bp.post("/console/logout")
@staff_page(totp_setup=True)
def logout():
    """End this console session for good."""
    return end_console_session(redirect(url_for("console.login", notice="logged_out")))


@bp.get("/console/recordings")
@staff_page()
def recordings():
    """The organisation's recordings, newest first; `?rows=1` gives only the
    table rows, which the page's script fetches every few seconds."""
    state = request.args.get("state") or None
    gaps = request.args.get("gaps") or None
    if gaps not in (None, "yes", "no"):
        raise InvalidInput("invalid_gaps", "gaps must be yes, no, or left out.")
    filters = retrieval.RecordingFilter(
        states=retrieval.parse_states(state) if state else (),
        has_gaps=None if gaps is None else gaps == "yes",
        device_id=parse_device_id(request.args["device"]) if request.args.get("device") else None,
    )
    found, next_cursor = retrieval.list_recordings(archive(), g.viewer, filters, limit=PAGE_SIZE,
                                                   cursor=request.args.get("cursor") or None)
    durations = retrieval.estimated_durations(archive(), [row["recording_id"] for row in found])
    template = "console/_recording_rows.html" if request.args.get("rows") else "console/recordings.html"
    return render_template(template, recordings=found, durations=durations, next_cursor=next_cursor,
                           state=state or "", gaps=gaps or "", device=request.args.get("device", ""),
                           first_page=not request.args.get("cursor"))


@bp.get("/console/recordings/<recording_id>")
@staff_page()
def recording(recording_id: str):
    """One recording: player, arrival timeline, manifests, copy requests."""
    return _recording_page(path_recording_id(recording_id))


def _recording_page(recording_id: str, *, form: dict | None = None, error: str | None = None, status: int = 200):
    detail = retrieval.recording_detail(archive(), g.viewer, recording_id)
    requests_here = []
    if g.role in (LAWYER, CUSTODIAN):
        requests_here, _ = copies.list_copy_requests(archive(), _who(), recording_id=recording_id, limit=100)
    duration = retrieval.estimated_durations(archive(), [recording_id]).get(recording_id)
    return render_template("console/recording.html", recording=detail, timeline=arrival_timeline(detail),
                           duration=duration, copy_requests=requests_here, form=form or {}, error=error), status


@bp.post("/console/recordings/<recording_id>/copy-requests")
@staff_page(LAWYER)
def request_copy(recording_id: str):
    """A lawyer asks for a signed copy of this recording."""
    recording_id = path_recording_id(recording_id)
    form = {"case_reference": request.form.get("case_reference", ""), "purpose": request.form.get("purpose", "")}
    try:
        made = copies.request_copy(archive(), _who(), recording_id,
                                   copies.NewCopyRequest(form["case_reference"], form["purpose"]))
    except InvalidInput as exc:
        return _recording_page(recording_id, form=form, error=exc.message, status=400)
    return redirect(url_for("console.copy_request", request_id=made["request_id"], notice="requested"))


@bp.get("/console/copies")
@staff_page(LAWYER, CUSTODIAN)
def copy_requests():
    """Copy requests, newest first: a lawyer's own, or all of the
    organisation's for a custodian."""
    state = request.args.get("state") or None
    found, next_cursor = copies.list_copy_requests(archive(), _who(), state=state, limit=PAGE_SIZE,
                                                   cursor=request.args.get("cursor") or None)
    return render_template("console/copies.html", copy_requests=found, next_cursor=next_cursor, state=state or "",
                           states=copies.COPY_STATES)


@bp.get("/console/copies/<request_id>")
@staff_page(LAWYER, CUSTODIAN)
def copy_request(request_id: str):
    """One copy request: its state, the decision, the download once ready."""
    return _copy_page(copies.parse_request_id(request_id))


def _copy_page(request_id: str, *, error: str | None = None, reason: str = "", status: int = 200):
    found = copies.copy_request(archive(), _who(), request_id)
    notice = request.args.get("notice", "")
    if notice == "approved" and found["state"] not in ("approved", "building"):
        notice = ""  # the page reloads itself; once built, its state line says so
    return render_template("console/copy.html", copy=found, notice=NOTICES.get(notice), error=error,
                           reason=reason), status


@bp.post("/console/copies/<request_id>/approve")
@staff_page(CUSTODIAN)
def approve(request_id: str):
    """A custodian approves; the bundle is then built in the background."""
    return _decide(copies.approve, request_id, "approved")


@bp.post("/console/copies/<request_id>/deny")
@staff_page(CUSTODIAN)
def deny(request_id: str):
    """A custodian denies, with a reason."""
    return _decide(copies.deny, request_id, "denied")


def _decide(decision, request_id: str, notice: str):
    request_id = copies.parse_request_id(request_id)
    reason = request.form.get("reason", "")
    try:
        decision(archive(), _who(), request_id, copies.Decision(reason or None))
    except InvalidInput as exc:
        return _copy_page(request_id, error=exc.message, reason=reason, status=400)
    return redirect(url_for("console.copy_request", request_id=request_id, notice=notice))


def _who() -> copies.StaffMember:
    return copies.StaffMember(username=g.account.username, role=g.role, organisation_id=g.organisation_id)


def arrival_timeline(detail: dict) -> list[dict]:
    """The recording as runs of chunks held and chunks missing, in index
    order, each with its place on a bar 1000 units wide (`offset`, `share`)
    and, for held runs, when its chunks arrived: what the timeline on the
    recording page draws."""
    chunks = {chunk["index"]: chunk for chunk in detail["chunks"]}
    runs = [{"held": True, "first": first, "last": last} for first, last in detail["received"]]
    runs += [{"held": False, "first": first, "last": last} for first, last in detail["missing"]]
    runs.sort(key=lambda run: run["first"])
    total = sum(run["last"] - run["first"] + 1 for run in runs) or 1
    offset = 0
    for run in runs:
        run["count"] = run["last"] - run["first"] + 1
        run["offset"], run["share"] = round(1000 * offset / total, 2), round(1000 * run["count"] / total, 2)
        offset += run["count"]
        if run["held"]:
            arrivals = [chunks[index]["received_at"] for index in range(run["first"], run["last"] + 1)]
            run["arrived_from"], run["arrived_to"] = min(arrivals), max(arrivals)
    return runs
