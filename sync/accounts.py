"""Who may talk to the server: anonymous devices and named staff.

Devices are anonymous: a random id, optionally an Ed25519 public key for chunk
signatures, and the enrollment code they joined with. Staff have one role each
and an Argon2id password hash (PHC string, from `cryptography`).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import uuid

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from crypto import InvalidEvidence
from crypto.signing import load_device_public_key

from . import audit
from .archive import Archive
from .errors import BadCredentials, EnrollmentRefused, InvalidInput

STAFF_ROLES = ("observer", "lawyer", "custodian")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
_MAX_PASSWORD_BYTES = 1024
_MIN_PASSWORD_CHARS = 12
# RFC 9106's second recommended memory and passes (64 MiB, 3 passes), one lane.
_ARGON2 = dict(length=32, iterations=3, lanes=1, memory_cost=64 * 1024)
# Concurrent Argon2id calls in one process hang for good with cryptography 50
# on OpenSSL 3.x/4.x when lanes > 1 (verified here: two logins at once froze
# a worker). One hash at a time per process also caps each process at 64 MiB
# of hashing memory however many logins arrive.
_ARGON2_TURN = threading.Lock()
# Checked against when the username is unknown, so that answer takes as long
# as a wrong password. Its password is random and was thrown away.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=1$Vs8sV108VRoQpLe18n5A6Q$YKwP75zOsxlyb+FOw012ZMu60RDBBH8mVB7z8nAUGP0"


def register_device(
    archive: Archive, *, enrollment_code: str | None = None, public_key_pem: str | None = None
) -> str:
    """Register an anonymous device and return its id (a UUID).

    Raises `EnrollmentRefused` when enrollment is closed and no valid code is
    given, or a code is given that the server does not know; `InvalidInput`
    when `public_key_pem` is not an Ed25519 public key in PEM.
    """
    if enrollment_code is not None:
        if not isinstance(enrollment_code, str) or not 1 <= len(enrollment_code) <= 128:
            raise InvalidInput("invalid_enrollment_code", "enrollment_code must be a string of 1 to 128 characters.")
    if public_key_pem is not None:
        if not isinstance(public_key_pem, str) or len(public_key_pem) > 1024:
            raise InvalidInput("invalid_public_key", "public_key_pem must be an Ed25519 public key in PEM.")
        try:
            load_device_public_key(public_key_pem)
        except InvalidEvidence:
            raise InvalidInput("invalid_public_key", "public_key_pem must be an Ed25519 public key in PEM.") from None
    device_id = str(uuid.uuid4())
    with archive.database.transaction() as db:
        if enrollment_code is not None:
            if next(iter(db.query("SELECT 1 FROM enrollment_codes WHERE code = ?", [enrollment_code])), None) is None:
                raise EnrollmentRefused("That enrollment code is not known to this server.")
        elif not archive.settings.open_enrollment:
            raise EnrollmentRefused("This server needs an enrollment code; ask the organisation running it.")
        now = archive.now()
        db["devices"].insert(
            {"id": device_id, "created_at": now, "public_key_pem": public_key_pem, "enrollment_code": enrollment_code}
        )
        audit.append_entry(db, at=now, actor=f"device:{device_id}", action="device.registered",
                           detail={"signs_chunks": public_key_pem is not None})
    return device_id


def device_is_active(archive: Archive, device_id: str) -> bool:
    """True if the device exists and has not been revoked."""
    row = archive.database.one("SELECT revoked_at FROM devices WHERE id = ?", [device_id])
    return row is not None and row["revoked_at"] is None


def create_enrollment_code(archive: Archive, note: str = "") -> str:
    """Make a new random enrollment code and return it."""
    code = secrets.token_urlsafe(12)
    with archive.database.transaction() as db:
        now = archive.now()
        db["enrollment_codes"].insert({"code": code, "created_at": now, "note": note})
        audit.append_entry(db, at=now, actor="system", action="enrollment_code.created", detail={"note": note})
    return code


def hash_password(password: str) -> str:
    """Argon2id PHC string of `password` with a fresh random salt."""
    with _ARGON2_TURN:
        return Argon2id(salt=os.urandom(16), **_ARGON2).derive_phc_encoded(password.encode("utf-8"))


def _password_matches(password: str, phc: str) -> bool:
    try:
        with _ARGON2_TURN:
            Argon2id.verify_phc_encoded(password.encode("utf-8"), phc)
        return True
    except (InvalidKey, ValueError):
        return False


def create_staff_user(archive: Archive, username: str, role: str, password: str, *, actor: str = "system") -> int:
    """Create a staff account and return its id.

    Raises `InvalidInput` for a malformed or taken username, an unknown role,
    or a password shorter than 12 characters."""
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise InvalidInput("invalid_username", "Usernames are 2-64 characters: lowercase letters, digits, '.', '_' or '-'.")
    if role not in STAFF_ROLES:
        raise InvalidInput("invalid_role", f"role must be one of {', '.join(STAFF_ROLES)}.")
    if not isinstance(password, str) or len(password) < _MIN_PASSWORD_CHARS or len(password.encode()) > _MAX_PASSWORD_BYTES:
        raise InvalidInput("weak_password", f"Passwords need at least {_MIN_PASSWORD_CHARS} characters.")
    password_hash = hash_password(password)
    with archive.database.transaction() as db:
        if next(iter(db.query("SELECT 1 FROM staff WHERE username = ?", [username])), None):
            raise InvalidInput("username_taken", f"A user named {username!r} already exists.")
        now = archive.now()
        staff_id = db["staff"].insert(
            {"username": username, "role": role, "password_hash": password_hash, "created_at": now}
        ).last_pk
        audit.append_entry(db, at=now, actor=actor, action="staff.created", detail={"username": username, "role": role})
    return staff_id


def authenticate_staff(archive: Archive, username, password) -> dict:
    """Return the staff row (`id`, `username`, `role`) for valid credentials.

    Raises `BadCredentials` for an unknown user, a wrong password or a
    disabled account alike, after the same amount of work, and logs the
    failure in the audit log."""
    if not isinstance(username, str) or not isinstance(password, str) or len(password.encode()) > _MAX_PASSWORD_BYTES:
        raise BadCredentials("Wrong username or password.")
    row = archive.database.one(
        "SELECT id, username, role, password_hash, disabled_at FROM staff WHERE username = ?", [username]
    )
    if row is None:
        # Spend the same effort as a real check so timing does not tell.
        _password_matches(password, _DUMMY_HASH)
        ok = False
    else:
        ok = _password_matches(password, row["password_hash"]) and row["disabled_at"] is None
    with archive.database.transaction() as db:
        audit.append_entry(
            db, at=archive.now(), actor=f"staff:{username[:64]}" if row else "anonymous",
            action="staff.login" if ok else "staff.login_failed",
            detail={"username": username[:64]},
        )
    if not ok:
        raise BadCredentials("Wrong username or password.")
    return {"id": row["id"], "username": row["username"], "role": row["role"]}


def staff_is_active(archive: Archive, staff_id: int) -> dict | None:
    """The staff row if the account exists and is not disabled, else None."""
    row = archive.database.one("SELECT id, username, role, disabled_at FROM staff WHERE id = ?", [staff_id])
    if row is None or row["disabled_at"] is not None:
        return None
    return row


