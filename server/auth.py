"""Tokens and roles. Identities are `device:<uuid>` or `staff:<id>`; the role
rides in the token and is re-checked against the records on every request,
so a revoked device, a disabled account, a changed role or an ended session
stops at once.

Every token carries a session id (`sid`), shared by the access and refresh
tokens of one login, so logging out ends both. Staff tokens also carry the
account's session generation (`gen`), which moves on when a password is set,
a second factor reset or the account disabled: older tokens are then refused.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import wraps

from flask import current_app, g
from flask_jwt_extended import create_access_token, create_refresh_token, get_jwt, verify_jwt_in_request

from sync.domain import accounts, logins
from sync.domain.retrieval import Viewer

from .errors import error_response
from .extensions import jwt

DEVICE = "device"
STAFF_ROLES = accounts.STAFF_ROLES


def archive():
    """The app's `sync.archive.Archive`."""
    return current_app.extensions["witness"]


def issue_tokens(identity: str, role: str, *, generation: int = 0) -> dict:
    """A fresh access and refresh token pair: one new session."""
    settings = archive().settings
    if role == DEVICE:
        access, refresh = timedelta(minutes=settings.device_access_minutes), timedelta(days=settings.device_refresh_days)
    else:
        access, refresh = timedelta(minutes=settings.staff_access_minutes), timedelta(hours=settings.staff_refresh_hours)
    claims = {"role": role, "sid": str(uuid.uuid4())}
    if role != DEVICE:
        claims["gen"] = generation
    return {
        "access_token": create_access_token(identity, additional_claims=claims, expires_delta=access),
        "refresh_token": create_refresh_token(identity, additional_claims=claims, expires_delta=refresh),
    }


def issue_access_token_for_refresh() -> str:
    """A new access token in the session of the refresh token being used."""
    claims = get_jwt()
    settings = archive().settings
    minutes = settings.device_access_minutes if g.role == DEVICE else settings.staff_access_minutes
    carried = {key: claims[key] for key in ("role", "sid", "gen") if key in claims}
    return create_access_token(g.identity, additional_claims=carried, expires_delta=timedelta(minutes=minutes))


def require_role(*roles: str, refresh: bool = False, either_token: bool = False, during_totp_setup: bool = False,
                 console_cookie: bool = False):
    """View decorator: a valid token (access, or refresh when `refresh`, or
    either when `either_token`) whose role is one of `roles`. Sets `g.role`, `g.identity`, `g.account`,
    `g.organisation_id`, and `g.device_id` (devices) or `g.viewer` (staff).

    A custodian who must set up a second factor first (the operator requires
    one) reaches only views marked `during_totp_setup`.

    `console_cookie`: the token may also come from the staff console's
    session cookie (server/pages.py). Only for GET routes a browser loads by
    URL (the player's footage, files to download), where no header can be
    added; SameSite=Strict keeps other sites from using it."""

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            verify_jwt_in_request(refresh=refresh, verify_type=not either_token,
                                  locations=["headers", "cookies"] if console_cookie else ["headers"])
            claims = get_jwt()
            role, identity = claims.get("role"), claims.get("sub", "")
            if role not in roles:
                return error_response(403, "forbidden", f"This needs the role {' or '.join(roles)}.")
            enter_session(role, identity, g.pop("_witness_account"))
            account = g.account
            if role != DEVICE and not during_totp_setup and logins.second_factor_setup_required(archive(), account):
                return error_response(403, "totp_setup_required",
                                      "This server requires custodians to use a second factor: set one up with "
                                      "POST /v1/auth/totp and POST /v1/auth/totp/confirm; this session goes on once it is on.")
            return view(*args, **kwargs)

        return wrapper

    return decorate


def enter_session(role: str, identity: str, account: dict) -> None:
    """Set `g.role`, `g.identity`, `g.account`, `g.organisation_id` and
    `g.device_id` (devices) or `g.viewer` (staff) for a verified token."""
    g.role, g.identity, g.account = role, identity, account
    g.organisation_id = account["organisation_id"]
    g.device_id = account["id"] if role == DEVICE else None
    g.viewer = Viewer(f"staff:{account['username']}", account["organisation_id"]) if role != DEVICE else None


def register_token_callbacks() -> None:
    """JSON answers for every token failure, and the revocation check."""

    @jwt.token_in_blocklist_loader
    def _revoked(_header, payload) -> bool:
        # Runs for every token; leaves the live account in g for require_role.
        kind, _, key = payload.get("sub", "").partition(":")
        account = None
        if kind == "device" and payload.get("role") == DEVICE:
            account = accounts.active_device(archive(), key)
        elif kind == "staff" and payload.get("role") in STAFF_ROLES and key.isdigit() and len(key) < 13:
            account = logins.staff_session(archive(), int(key), payload.get("sid"))
            if account is not None and (account["role"] != payload.get("role")
                                        or account["session_generation"] != payload.get("gen", 0)):
                account = None
        g._witness_account = account
        return account is None

    @jwt.unauthorized_loader
    def _missing(reason):
        return error_response(401, "unauthorized", "Send Authorization: Bearer <access token>.")

    @jwt.invalid_token_loader
    def _invalid(reason):
        return error_response(401, "invalid_token", f"The token is not valid: {reason}.")

    @jwt.expired_token_loader
    def _expired(_header, payload):
        return error_response(401, "token_expired", "The token has expired; refresh it with POST /v1/auth/refresh.")

    @jwt.revoked_token_loader
    def _revoked_answer(_header, payload):
        return error_response(401, "token_revoked", "This token was revoked, its session ended or its account "
                                                    "disabled; log in again.")

    @jwt.needs_fresh_token_loader
    def _needs_fresh(_header, payload):
        return error_response(401, "fresh_token_required", "Log in again for this action.")
