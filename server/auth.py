"""Tokens and roles. Identities are `device:<uuid>` or `staff:<id>`; the role
rides in the token and is re-checked against the records on every request,
so a revoked device or disabled account stops at once."""

from __future__ import annotations

from datetime import timedelta
from functools import wraps

from flask import current_app, g
from flask_jwt_extended import create_access_token, create_refresh_token, get_jwt, verify_jwt_in_request

from sync import accounts

from .errors import error_response
from .extensions import jwt

DEVICE = "device"
STAFF_ROLES = accounts.STAFF_ROLES


def archive():
    """The app's `sync.archive.Archive`."""
    return current_app.extensions["witness"]


def issue_tokens(identity: str, role: str) -> dict:
    """A fresh access and refresh token pair for an identity."""
    settings = archive().settings
    if role == DEVICE:
        access, refresh = timedelta(minutes=settings.device_access_minutes), timedelta(days=settings.device_refresh_days)
    else:
        access, refresh = timedelta(minutes=settings.staff_access_minutes), timedelta(hours=settings.staff_refresh_hours)
    claims = {"role": role}
    return {
        "access_token": create_access_token(identity, additional_claims=claims, expires_delta=access),
        "refresh_token": create_refresh_token(identity, additional_claims=claims, expires_delta=refresh),
    }


def issue_access_token(identity: str, role: str) -> str:
    settings = archive().settings
    minutes = settings.device_access_minutes if role == DEVICE else settings.staff_access_minutes
    return create_access_token(identity, additional_claims={"role": role}, expires_delta=timedelta(minutes=minutes))


def require_role(*roles: str, refresh: bool = False):
    """View decorator: a valid token (access, or refresh when `refresh`) whose
    role is one of `roles`; sets `g.role`, `g.device_id` or `g.staff`."""

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            verify_jwt_in_request(refresh=refresh)
            claims = get_jwt()
            role, identity = claims.get("role"), claims.get("sub", "")
            if role not in roles:
                return error_response(403, "forbidden", f"This needs the role {' or '.join(roles)}.")
            g.role = role
            g.identity = identity
            g.device_id = identity.split(":", 1)[1] if role == DEVICE else None
            return view(*args, **kwargs)

        return wrapper

    return decorate


def register_token_callbacks() -> None:
    """JSON answers for every token failure, and the revocation check."""

    @jwt.token_in_blocklist_loader
    def _revoked(_header, payload) -> bool:
        kind, _, key = payload.get("sub", "").partition(":")
        if kind == "device" and payload.get("role") == DEVICE:
            return not accounts.device_is_active(archive(), key)
        if kind == "staff" and payload.get("role") in STAFF_ROLES and key.isdigit():
            row = accounts.staff_is_active(archive(), int(key))
            return row is None or row["role"] != payload.get("role")
        return True

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
        return error_response(401, "token_revoked", "This token was revoked or its account disabled.")

    @jwt.needs_fresh_token_loader
    def _needs_fresh(_header, payload):
        return error_response(401, "fresh_token_required", "Log in again for this action.")
