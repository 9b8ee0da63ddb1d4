"""The staff console's page for one's own account, for every staff role: who
I am, my password, my second factor. Changing the password needs the
current one, removing the second factor a current code from it. A custodian the operator requires to
use a second factor is sent here until one is on (`staff_page`)."""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for

from sync.domain import accounts, logins
from sync.errors import InvalidInput, SecondFactorAlreadyOn, TooManyAttempts, WrongSecondFactor

from .auth import archive
from .clients import client_key
from .pages import drop_console_cookie, register_page_errors, staff_page, wait_in_words

bp = Blueprint("console_account", __name__)
register_page_errors(bp)

NOTICES = {
    "totp_started": "Now add the key to your authenticator app and type the code it shows.",
    "totp_on": "Your second factor is on. From now on, log in with your password and a code from the app.",
    "totp_removed": "Your second factor is off: logging in needs only your password now. Set up a new one below "
                    "(with a new key) to replace it.",
}
PASSWORD_ERRORS = {
    "wrong_current_password": "That is not your current password. Nothing changed. (Failed tries count like "
                              "failed logins: after a few, you wait a little longer before each next try.)",
}


@bp.get("/console/account")
@staff_page(totp_setup=True)
def account():
    """Who I am; change my password; set up a second factor."""
    return _account_page()


def _account_page(*, error: str | None = None, status: int = 200):
    me = accounts.staff_account(archive(), g.organisation_id, g.account.id)
    return render_template(
        "console/account.html", me=me, organisation=accounts.organisation(archive(), g.organisation_id),
        pending=None if me["totp_enabled"] else logins.pending_totp_setup(archive(), g.account.id),
        setup_required=logins.second_factor_setup_required(archive(), g.account),
        required_for_role=archive().settings.require_custodian_totp and g.role == "custodian",
        notice=NOTICES.get(request.args.get("notice", "")), error=error), status


@bp.post("/console/account/password")
@staff_page(totp_setup=True)
def change_password():
    """Change my password; every session ends, this one too."""
    new_password = request.form.get("new_password", "")
    if new_password != request.form.get("new_password_again", ""):
        return _account_page(error="The two new passwords differ. Nothing changed.", status=400)
    try:
        logins.change_own_password(archive(), g.account.id, request.form.get("current_password", ""),
                                   new_password, client=client_key())
    except InvalidInput as exc:
        return _account_page(error=PASSWORD_ERRORS.get(exc.code, exc.message), status=400)
    except TooManyAttempts as exc:
        return _too_many(exc)
    # The session is over already (the account's generation moved on).
    return drop_console_cookie(redirect(url_for("console.login", notice="password_changed")))


@bp.post("/console/account/totp")
@staff_page(totp_setup=True)
def start_second_factor():
    """Start setting up a second factor: a new key for the app."""
    try:
        logins.start_totp_setup(archive(), g.account.id)
    except SecondFactorAlreadyOn:
        return redirect(url_for("console_account.account"))
    return redirect(url_for("console_account.account", notice="totp_started", _anchor="second-factor"))


@bp.post("/console/account/totp/confirm")
@staff_page(totp_setup=True)
def confirm_second_factor():
    """Turn the second factor on with a code from the app."""
    try:
        logins.confirm_totp(archive(), g.account.id, request.form.get("code", "").strip())
    except WrongSecondFactor:
        return _account_page(error="That code does not match. Type the code the app shows now (it changes every "
                                   "30 seconds); if it still fails, check the phone's clock is right.", status=400)
    except SecondFactorAlreadyOn:
        return redirect(url_for("console_account.account"))
    return redirect(url_for("console_account.account", notice="totp_on"))


@bp.post("/console/account/totp/remove")
@staff_page(totp_setup=True)
def remove_second_factor():
    """Turn my second factor off with a current code from the app (to
    replace it: remove it, then set up a new one)."""
    try:
        logins.remove_own_totp(archive(), g.account.id, request.form.get("code", "").strip(), client=client_key())
    except WrongSecondFactor:
        return _account_page(error="That code does not match, or was used already. Type the code the app shows now "
                                   "(after logging in with a code, wait for the next one). Nothing changed. Lost "
                                   "the app? Ask a custodian to reset the second factor.", status=400)
    except TooManyAttempts as exc:
        return _too_many(exc)
    return redirect(url_for("console_account.account", notice="totp_removed", _anchor="second-factor"))


def _too_many(exc: TooManyAttempts):
    page, status = _account_page(error="Too many failed tries for your username from here. Wait "
                                       f"{wait_in_words(exc.retry_after)}, then try again. Nothing changed.",
                                 status=429)
    return page, status, {"Retry-After": str(exc.retry_after)}
