"""Time-based one-time passwords (RFC 6238) for staff second factors, with
`cryptography`'s `twofactor.totp`: SHA-1, 6 digits, 30-second steps — what
every authenticator app speaks.

Secrets are stored sealed (`seal_stored_secret`) with a key kept outside the
data folder, so a copy of the records alone gives no second factors."""

from __future__ import annotations

import base64
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from . import InvalidEvidence

SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation
DIGITS = 6
STEP_SECONDS = 30
# Accept the previous and next step too: phone clocks drift.
_WINDOW = (0, -1, 1)


def new_totp_secret() -> bytes:
    """A fresh random TOTP secret."""
    return os.urandom(SECRET_BYTES)


def secret_base32(secret: bytes) -> str:
    """The secret as authenticator apps take it when typed (base32, no padding)."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def provisioning_uri(secret: bytes, account: str, issuer: str) -> str:
    """The `otpauth://totp/...` URI an authenticator app reads from a QR code."""
    return _totp(secret).get_provisioning_uri(account, issuer)


def current_code(secret: bytes, at: float) -> str:
    """The code for Unix time `at` (what an authenticator app shows)."""
    return _totp(secret).generate(int(at)).decode("ascii")


def matching_step(secret: bytes, code, at: float) -> int | None:
    """The time step (Unix time // 30) whose code equals `code` at Unix time
    `at`, allowing one step of clock drift either way; None if none does or
    `code` is not six digits. Callers refuse a step already used (replay)."""
    if not isinstance(code, str) or len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = _totp(secret)
    for drift in _WINDOW:
        moment = int(at) + drift * STEP_SECONDS
        if hmac.compare_digest(totp.generate(moment), code.encode("ascii")):
            return moment // STEP_SECONDS
    return None


def stored_secret_key(server_secret: bytes) -> bytes:
    """The AES-256 key that seals stored secrets, derived from a secret kept
    in the keys folder (HKDF-SHA256, its own `info`)."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"witness/v1 stored-secrets").derive(server_secret)


def seal_stored_secret(key: bytes, secret: bytes, context: str) -> bytes:
    """AES-256-GCM with a random nonce: `nonce || ciphertext`, bound to
    `context` (e.g. the account it belongs to)."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, secret, context.encode("utf-8"))


def open_stored_secret(key: bytes, sealed: bytes, context: str) -> bytes:
    """Open `seal_stored_secret`'s output. Raises `InvalidEvidence` if it was
    sealed under another key or context, or altered."""
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], context.encode("utf-8"))
    except (InvalidTag, ValueError) as exc:
        raise InvalidEvidence() from exc


def _totp(secret: bytes) -> TOTP:
    return TOTP(secret, DIGITS, hashes.SHA1(), STEP_SECONDS, enforce_key_length=True)
