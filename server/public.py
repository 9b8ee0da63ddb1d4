"""Endpoints anyone may call: server keys, the OpenAPI document, staff login
and token refresh."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, jsonify

from crypto.signing import public_key_pem
from sync.domain import logins, transparency
from sync.domain.ingest import b64url_encode as _b64url

from .auth import DEVICE, STAFF_ROLES, archive, issue_access_token_for_refresh, issue_tokens, require_role
from .clients import client_key
from .device_limits import limited
from .requests import json_body

bp = Blueprint("public", __name__)


@bp.get("/v1/keys")
def keys():
    """The server's public keys (never a private one)."""
    server_keys = archive().keys
    return jsonify(
        hpke={
            "key_id": server_keys.hpke_key_id,
            "suite": "X25519-HKDF-SHA256-AES-256-GCM",
            "public_key": _b64url(server_keys.hpke_public_raw),
        },
        signing={
            "key_id": server_keys.signing_key_id,
            "alg": "Ed25519",
            "public_key_pem": public_key_pem(server_keys.signing_private.public_key()),
        },
        tsa={"certificate_chain_pem": server_keys.tsa.chain_pem()},
        log={"origin": transparency.log_origin(archive()), "vkey": transparency.log_signer(archive()).verifier.vkey},
    )


@bp.get("/v1/openapi.json")
def openapi():
    """This API described as OpenAPI 3.1."""
    text = resources.files("server").joinpath("openapi.json").read_text("utf-8")
    return Response(text, mimetype="application/json")


@bp.post("/v1/auth/login")
def login():
    """Staff log in with username, password and (when on) a TOTP code."""
    body = json_body()
    staff = logins.authenticate_staff(archive(), body.get("username"), body.get("password"), body.get("totp"),
                                      client=client_key())
    # Exactly the two tokens PROTOCOL.md names; GET /v1/auth/me says the rest.
    return jsonify(issue_tokens(f"staff:{staff.id}", staff.role, generation=staff.session_generation))


@bp.post("/v1/auth/refresh")
@require_role(DEVICE, *STAFF_ROLES, refresh=True, during_totp_setup=True)
@limited()  # a device's refresh counts toward its requests (server/device_limits.py)
def refresh():
    """A new access token for a valid refresh token (same session)."""
    return jsonify(access_token=issue_access_token_for_refresh())
