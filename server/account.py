"""A staff member's own account: who am I, log out, change my password, set
up or remove a second factor. Changing either needs proof beyond the token
(the current password, a current code), so a stolen token cannot take the
account over."""

from __future__ import annotations

import time

from flask import Blueprint, g, jsonify
from flask_jwt_extended import get_jwt

from sync.domain import accounts, logins

from .auth import STAFF_ROLES, archive, require_role
from .clients import client_key
from .requests import json_body

bp = Blueprint("account", __name__)


@bp.get("/v1/auth/me")
@require_role(*STAFF_ROLES, during_totp_setup=True)
def me():
    """The logged-in account and its organisation."""
    organisation = accounts.organisation(archive(), g.organisation_id)
    account = accounts.staff_account(archive(), g.organisation_id, g.account.id)
    return jsonify(**account,
                   organisation={"id": organisation.id, "slug": organisation.slug, "name": organisation.name},
                   totp_setup_required=logins.second_factor_setup_required(archive(), g.account))


@bp.post("/v1/auth/logout")
@require_role(*STAFF_ROLES, either_token=True, during_totp_setup=True)
def logout():
    """End this session: its access and refresh tokens stop working."""
    refresh_lifetime = archive().settings.staff_refresh_hours * 3600
    logins.end_session(archive(), get_jwt().get("sid") or get_jwt()["jti"], int(time.time()) + refresh_lifetime,
                       actor=g.viewer.actor, organisation_id=g.organisation_id)
    return "", 204


@bp.post("/v1/auth/password")
@require_role(*STAFF_ROLES, during_totp_setup=True)
def change_password():
    """Change my own password; every session of the account ends."""
    body = json_body()
    logins.change_own_password(archive(), g.account.id, body.get("current_password"), body.get("new_password"),
                               client=client_key())
    return "", 204


@bp.post("/v1/auth/totp")
@require_role(*STAFF_ROLES, during_totp_setup=True)
def start_totp():
    """Start setting up a second factor: a new secret for the app."""
    return jsonify(logins.start_totp_setup(archive(), g.account.id))


@bp.post("/v1/auth/totp/confirm")
@require_role(*STAFF_ROLES, during_totp_setup=True)
def confirm_totp():
    """Turn the second factor on with a code from the app."""
    logins.confirm_totp(archive(), g.account.id, json_body().get("code"))
    return jsonify(totp_enabled=True)


@bp.post("/v1/auth/totp/remove")
@require_role(*STAFF_ROLES, during_totp_setup=True)
def remove_totp():
    """Turn my second factor off with a current code from the app (to replace
    it: remove, then set up a new one)."""
    logins.remove_own_totp(archive(), g.account.id, json_body().get("code"), client=client_key())
    return jsonify(totp_enabled=False)
