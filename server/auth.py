"""Tokens and roles. Identities are `device:<uuid>` or `staff:<id>`; the role
rides in the token and is re-checked against the records on every request,
so a revoked device, a disabled account, a changed role or an ended session
stops at once.

Every token carries a session id (`sid`), shared by the access and refresh
tokens of one login, so logging out ends both. Staff tokens also carry the
account's session generation (`gen`), which moves on when a password is set,
a second factor reset or the account disabled: older tokens are then refused.

A token's signature and claims are checked once per worker: a token that
passed is remembered (`VerifiedTokens`, bounded, in memory) until it
expires, and later requests with it skip parsing it again; the revocation
check against the records still runs on every request.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from datetime import timedelta
from functools import wraps

from flask import current_app, g, request
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    get_jwt,
    get_jwt_header,
    verify_jwt_in_request,
)

from sync.domain import accounts, logins
from sync.domain.retrieval import Viewer
from sync.records.rows import Device, Staff

from .errors import error_response
from .extensions import jwt

DEVICE = "device"
STAFF_ROLES = accounts.STAFF_ROLES


def archive():
    """The app's `sync.archive.Archive`."""
    return current_app.extensions["witness"]


class VerifiedTokens:
    """Tokens whose signature and claims this process has checked, until
    they expire: `Authorization: Bearer <token>` -> (header, claims). At
    most `size` of them, the least recently used forgotten first; nothing
    is written anywhere. What is remembered is only what the token itself
    says, so the revocation check (the records) is never skipped."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._tokens: OrderedDict[str, tuple[dict, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, authorization: str | None, *, refresh: bool, either_token: bool) -> tuple[dict, dict] | None:
        """The verified (header, claims) of this header's token, if it is
        remembered, unexpired and of the kind asked for; else None (the
        caller verifies it in full, which also gives the error answer)."""
        token = _bearer_token(authorization)
        if token is None:
            return None
        with self._lock:
            found = self._tokens.get(token)
            if found is not None:
                self._tokens.move_to_end(token)
        if found is None:
            return None
        header, claims = found
        if not claims.get("exp", 0) > time.time():
            return None
        if not either_token and claims.get("type") != ("refresh" if refresh else "access"):
            return None
        return found

    def remember(self, authorization: str | None, header: dict, claims: dict) -> None:
        token = _bearer_token(authorization)
        if token is None or "exp" not in claims:
            return
        with self._lock:
            self._tokens[token] = (header, claims)
            self._tokens.move_to_end(token)
            while len(self._tokens) > self.size:
                self._tokens.popitem(last=False)


def _bearer_token(authorization: str | None) -> str | None:
    # Only the plain one-credential form; anything else goes the full way.
    if not authorization or not authorization.startswith("Bearer ") or "," in authorization:
        return None
    token = authorization[7:]
    return token if token and " " not in token else None


def verified_tokens() -> VerifiedTokens:
    return current_app.extensions["witness_tokens"]


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
            authorization = request.headers.get("Authorization")
            known = verified_tokens().lookup(authorization, refresh=refresh, either_token=either_token)
            if known is not None:
                header, claims = known
                if token_revoked(header, claims):
                    return revoked_answer(header, claims)
                # What verify_jwt_in_request leaves for get_jwt() and the others.
                g._jwt_extended_jwt_user = {"loaded_user": None}
                g._jwt_extended_jwt_header, g._jwt_extended_jwt = header, claims
                g._jwt_extended_jwt_location = "headers"
            else:
                verify_jwt_in_request(refresh=refresh, verify_type=not either_token,
                                      locations=["headers", "cookies"] if console_cookie else ["headers"])
                claims = get_jwt()
                if g._jwt_extended_jwt_location == "headers":
                    verified_tokens().remember(authorization, get_jwt_header(), claims)
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


def enter_session(role: str, identity: str, account: Staff | Device) -> None:
    """Set `g.role`, `g.identity`, `g.account` (the device's or staff
    member's row), `g.organisation_id` and `g.device_id` (devices) or
    `g.viewer` (staff) for a verified token."""
    g.role, g.identity, g.account = role, identity, account
    g.organisation_id = account.organisation_id
    g.device_id = account.id if role == DEVICE else None
    g.viewer = Viewer(f"staff:{account.username}", account.organisation_id) if role != DEVICE else None


def token_revoked(_header, payload) -> bool:
    """The revocation check, on every request: True unless the token's
    account is live (the device not revoked; the staff account enabled,
    with the token's role, session and generation). Leaves the live
    account in g for require_role."""
    kind, _, key = payload.get("sub", "").partition(":")
    account = None
    if kind == "device" and payload.get("role") == DEVICE:
        account = accounts.active_device(archive(), key)
    elif kind == "staff" and payload.get("role") in STAFF_ROLES and key.isdigit() and len(key) < 13:
        account = logins.staff_session(archive(), int(key), payload.get("sid"))
        if account is not None and (account.role != payload.get("role")
                                    or account.session_generation != payload.get("gen", 0)):
            account = None
    g._witness_account = account
    return account is None


def revoked_answer(_header, _payload):
    return error_response(401, "token_revoked", "This token was revoked, its session ended or its account "
                                                "disabled; log in again.")


def register_token_callbacks() -> None:
    """JSON answers for every token failure, and the revocation check."""

    jwt.token_in_blocklist_loader(token_revoked)

    @jwt.unauthorized_loader
    def _missing(reason):
        return error_response(401, "unauthorized", "Send Authorization: Bearer <access token>.")

    @jwt.invalid_token_loader
    def _invalid(reason):
        return error_response(401, "invalid_token", f"The token is not valid: {reason}.")

    @jwt.expired_token_loader
    def _expired(_header, payload):
        return error_response(401, "token_expired", "The token has expired; refresh it with POST /v1/auth/refresh.")

    jwt.revoked_token_loader(revoked_answer)

    @jwt.needs_fresh_token_loader
    def _needs_fresh(_header, payload):
        return error_response(401, "fresh_token_required", "Log in again for this action.")
