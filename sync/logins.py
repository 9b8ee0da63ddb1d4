"""Staff logging in: passwords, second factors (TOTP), throttling of failed
attempts, and sessions that can be ended.

Throttling is per username, known or not, so its answers never tell whether
an account exists: after `login_max_failures` failures within
`login_lockout_seconds`, that username is refused for `login_lockout_seconds`
without the password being checked (so a flood costs no hashing either).

A session is one login: its access and refresh tokens share a session id.
Logging out ends the session; disabling an account, setting its password or
resetting its second factor ends all of its sessions (the account's session
generation moves on, and tokens carry the generation they were issued under).
"""

from __future__ import annotations

from datetime import timedelta

from crypto import InvalidEvidence
from crypto.totp import (
    matching_step,
    new_totp_secret,
    open_stored_secret,
    provisioning_uri,
    seal_stored_secret,
    secret_base32,
    stored_secret_key,
)

from . import audit
from .accounts import MAX_PASSWORD_BYTES, check_new_password, hash_password, password_matches
from .archive import Archive
from .errors import (
    BadCredentials,
    InvalidInput,
    SecondFactorAlreadyOn,
    SecondFactorRequired,
    TooManyAttempts,
    WrongSecondFactor,
)
from .timefmt import format_time, parse_time

# Checked against when the username is unknown, so that answer takes as long
# as a wrong password. Its password is random and was thrown away.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=1$Vs8sV108VRoQpLe18n5A6Q$YKwP75zOsxlyb+FOw012ZMu60RDBBH8mVB7z8nAUGP0"


def authenticate_staff(archive: Archive, username, password, totp_code=None) -> dict:
    """Check a login and return the account: `id`, `username`, `role`,
    `organisation_id`, `session_generation`, `totp_enabled` and
    `totp_setup_required` (the operator requires a second factor for this
    role and the account has none: the session may only set one up).

    Raises `TooManyAttempts` while the username is locked (nothing checked);
    `BadCredentials` for an unknown user, a wrong password, a disabled
    account or a wrong or replayed TOTP code alike; `SecondFactorRequired`
    when the password is right and the account has TOTP on but no code was
    sent. Every outcome is in the audit log."""
    if not isinstance(username, str) or not isinstance(password, str) \
            or len(password.encode("utf-8", "replace")) > MAX_PASSWORD_BYTES or not 0 < len(username) <= 64:
        raise BadCredentials("Wrong username or password.")
    now = archive.clock()
    _refuse_if_locked(archive, username, now)
    row = archive.database.one("SELECT * FROM staff WHERE username = ?", [username])
    if row is None:
        # Spend the same effort as a real check so timing does not tell.
        password_matches(password, _DUMMY_HASH)
        _count_failure(archive, username, None, "unknown_user")
    if not password_matches(password, row["password_hash"]):
        _count_failure(archive, username, row, "wrong_password")
    if row["disabled_at"] is not None:
        _count_failure(archive, username, row, "disabled")
    totp_enabled = row["totp_enabled_at"] is not None
    if totp_enabled:
        if totp_code in (None, ""):
            raise SecondFactorRequired("This account has a second factor: send the 6-digit code from the "
                                       "authenticator app as totp.")
        secret = _totp_secret(archive, row)
        step = matching_step(secret, totp_code, now.timestamp()) if secret else None
        if step is None or (row["totp_last_step"] is not None and step <= row["totp_last_step"]):
            _count_failure(archive, username, row, "wrong_totp")
    with archive.database.transaction() as db:
        db.execute("DELETE FROM login_failures WHERE username = ?", [username])
        if totp_enabled:
            db.execute("UPDATE staff SET totp_last_step = ? WHERE id = ?", [step, row["id"]])
        audit.append_entry(db, at=format_time(now), actor=f"staff:{username}", action="staff.login",
                           organisation_id=row["organisation_id"],
                           detail={"username": username, "second_factor": totp_enabled})
    return {
        "id": row["id"], "username": row["username"], "role": row["role"],
        "organisation_id": row["organisation_id"], "session_generation": row["session_generation"] or 0,
        "totp_enabled": totp_enabled,
        "totp_setup_required": second_factor_setup_required(archive, row),
    }


def second_factor_setup_required(archive: Archive, row: dict) -> bool:
    """True when the operator requires TOTP for custodians
    (`WITNESS_REQUIRE_CUSTODIAN_TOTP`) and this custodian has none yet."""
    return archive.settings.require_custodian_totp and row["role"] == "custodian" and row["totp_enabled_at"] is None


def _refuse_if_locked(archive: Archive, username: str, now) -> None:
    row = archive.database.one("SELECT locked_until FROM login_failures WHERE username = ?", [username])
    if row is not None and row["locked_until"] is not None:
        left = (parse_time(row["locked_until"]) - now).total_seconds()
        if left > 0:
            raise TooManyAttempts("Too many failed logins for this username; wait before trying again.",
                                  retry_after=int(left) + 1)


def _count_failure(archive: Archive, username: str, row: dict | None, reason: str):
    """Record a failed login (and lock the username at the limit), then raise
    `BadCredentials`."""
    _record_failure(archive, username, row, reason)
    raise BadCredentials("Wrong username or password.")


def _record_failure(archive: Archive, username: str, row: dict | None, reason: str) -> None:
    settings = archive.settings
    now = archive.clock()
    window_start = format_time(now - timedelta(seconds=settings.login_lockout_seconds))
    with archive.database.transaction() as db:
        # Forget failures that are old news, so the table stays small however
        # many usernames are guessed.
        db.execute("DELETE FROM login_failures WHERE last_failed_at < ? "
                   "AND (locked_until IS NULL OR locked_until < ?)", [window_start, format_time(now)])
        current = next(iter(db.query("SELECT * FROM login_failures WHERE username = ?", [username])), None)
        if current is None or current["first_failed_at"] < window_start:
            failures, first = 1, format_time(now)
        else:
            failures, first = current["failures"] + 1, current["first_failed_at"]
        locked_until = None
        if failures >= settings.login_max_failures:
            locked_until = format_time(now + timedelta(seconds=settings.login_lockout_seconds))
        db["login_failures"].upsert({"username": username, "failures": 0 if locked_until else failures,
                                     "first_failed_at": first, "last_failed_at": format_time(now),
                                     "locked_until": locked_until}, pk="username")
        organisation_id = row["organisation_id"] if row else None
        actor = f"staff:{username}" if row else "anonymous"
        audit.append_entry(db, at=format_time(now), actor=actor, action="staff.login_failed",
                           organisation_id=organisation_id, detail={"username": username, "reason": reason})
        if locked_until:
            audit.append_entry(db, at=format_time(now), actor="system", action="staff.login_locked",
                               organisation_id=organisation_id,
                               detail={"username": username, "failures": failures, "locked_until": locked_until})


# -- sessions ---------------------------------------------------------------

def staff_session(archive: Archive, staff_id: int, session_id: str | None) -> dict | None:
    """The account behind a staff token, if the account is active and the
    session has not ended; else None. One query, run on every request."""
    row = archive.database.one(
        """SELECT s.id, s.username, s.role, s.organisation_id, s.session_generation, s.totp_enabled_at,
                  s.disabled_at, EXISTS(SELECT 1 FROM ended_sessions e WHERE e.sid = ?) AS ended
           FROM staff s WHERE s.id = ?""", [session_id or "", staff_id])
    if row is None or row["disabled_at"] is not None or row["ended"]:
        return None
    row["session_generation"] = row["session_generation"] or 0
    return row


def end_session(archive: Archive, session_id: str, expires_at: int, *, actor: str, organisation_id: int) -> None:
    """End a session (logout): its tokens are refused from now on. `expires_at`
    (Unix time) is when its refresh token expires anyway, after which the
    record is dropped."""
    with archive.database.transaction() as db:
        now = archive.clock()
        db.execute("DELETE FROM ended_sessions WHERE expires_at < ?", [int(now.timestamp())])
        db["ended_sessions"].upsert({"sid": session_id, "ended_at": format_time(now), "expires_at": expires_at},
                                    pk="sid")
        audit.append_entry(db, at=format_time(now), actor=actor, action="staff.logout",
                           organisation_id=organisation_id, detail={})


# -- passwords and second factors ------------------------------------------

def change_own_password(archive: Archive, staff_id: int, current_password, new_password) -> None:
    """Set a new password after checking the current one; every session of
    the account ends (log in again). A wrong current password counts as a
    failed login for the username, so a stolen session cannot be used to
    guess it. Raises `InvalidInput` (`wrong_current_password`,
    `weak_password`) and `TooManyAttempts` while the username is locked."""
    row = archive.database.one("SELECT * FROM staff WHERE id = ?", [staff_id])
    _refuse_if_locked(archive, row["username"], archive.clock())
    if not isinstance(current_password, str) \
            or len(current_password.encode("utf-8", "replace")) > MAX_PASSWORD_BYTES \
            or not password_matches(current_password, row["password_hash"]):
        _record_failure(archive, row["username"], row, "wrong_current_password")
        raise InvalidInput("wrong_current_password", "current_password is not this account's password.")
    new_hash = hash_password(check_new_password(new_password))
    with archive.database.transaction() as db:
        db.execute("UPDATE staff SET password_hash = ?, session_generation = COALESCE(session_generation, 0) + 1 "
                   "WHERE id = ?", [new_hash, staff_id])
        audit.append_entry(db, at=archive.now(), actor=f"staff:{row['username']}", action="staff.password_changed",
                           organisation_id=row["organisation_id"], detail={"username": row["username"]})


def start_totp_setup(archive: Archive, staff_id: int) -> dict:
    """Make a new TOTP secret for the account (replacing one not yet
    confirmed) and return `secret` (base32, for typing) and `otpauth_uri`
    (for a QR code). The second factor is on only after `confirm_totp`.
    Raises `SecondFactorAlreadyOn` if one is confirmed already."""
    secret = new_totp_secret()
    with archive.database.transaction() as db:
        row = next(iter(db.query("SELECT * FROM staff WHERE id = ?", [staff_id])))
        if row["totp_enabled_at"] is not None:
            raise SecondFactorAlreadyOn("A second factor is already set up; a custodian can reset it.")
        db.execute("UPDATE staff SET totp_secret = ? WHERE id = ?",
                   [_seal(archive, row["id"], secret), staff_id])
        audit.append_entry(db, at=archive.now(), actor=f"staff:{row['username']}", action="staff.totp_setup_started",
                           organisation_id=row["organisation_id"], detail={"username": row["username"]})
    return _totp_setup_answer(archive, secret, row["username"])


def confirm_totp(archive: Archive, staff_id: int, code) -> None:
    """Turn the second factor on once the user proves their app shows the
    right code. Raises `WrongSecondFactor` for a wrong code or when no setup
    was started, `SecondFactorAlreadyOn` when it is on already."""
    now = archive.clock()
    with archive.database.transaction() as db:
        row = next(iter(db.query("SELECT * FROM staff WHERE id = ?", [staff_id])))
        if row["totp_enabled_at"] is not None:
            raise SecondFactorAlreadyOn("A second factor is already set up.")
        if row["totp_secret"] is None:
            raise WrongSecondFactor("Start with POST /v1/auth/totp to get a secret, then confirm a code from it.")
        secret = _totp_secret(archive, row)
        step = matching_step(secret, code, now.timestamp()) if secret else None
        if step is None:
            raise WrongSecondFactor("That code does not match; check the authenticator app's clock and try the "
                                    "current code.")
        db.execute("UPDATE staff SET totp_enabled_at = ?, totp_last_step = ? WHERE id = ?",
                   [format_time(now), step, staff_id])
        audit.append_entry(db, at=format_time(now), actor=f"staff:{row['username']}", action="staff.totp_enabled",
                           organisation_id=row["organisation_id"], detail={"username": row["username"]})


def pending_totp_setup(archive: Archive, staff_id: int) -> dict | None:
    """The second factor the account started setting up but has not
    confirmed: `secret` (base32) and `otpauth_uri`, as `start_totp_setup`
    gave them, so a page can show them again until a code confirms it. None
    when no setup is pending (none started, one already on, or the secret
    was sealed under keys this server no longer holds). Not audited: it
    shows the account's own secret to its own session. Raises nothing."""
    row = archive.database.one("SELECT * FROM staff WHERE id = ?", [staff_id])
    if row is None or row["totp_enabled_at"] is not None or row["totp_secret"] is None:
        return None
    secret = _totp_secret(archive, row)
    if secret is None:
        return None
    return _totp_setup_answer(archive, secret, row["username"])


def _totp_setup_answer(archive: Archive, secret: bytes, username: str) -> dict:
    return {"secret": secret_base32(secret),
            "otpauth_uri": provisioning_uri(secret, username, archive.settings.totp_issuer)}


def _seal(archive: Archive, staff_id: int, secret: bytes) -> bytes:
    return seal_stored_secret(stored_secret_key(archive.keys.token_secret), secret, f"totp staff:{staff_id}")


def _totp_secret(archive: Archive, row: dict) -> bytes | None:
    try:
        return open_stored_secret(stored_secret_key(archive.keys.token_secret), bytes(row["totp_secret"]),
                                  f"totp staff:{row['id']}")
    except InvalidEvidence:
        # Sealed under other keys (the keys folder was replaced): no code can
        # match; a custodian resets the second factor.
        return None
