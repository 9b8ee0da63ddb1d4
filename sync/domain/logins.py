"""Staff logging in: passwords, second factors (TOTP), throttling of failed
attempts, and sessions that can be ended.

Throttling slows down guessing without handing anyone a way to keep a staff
member out. Failed attempts are counted per (username, client): the
username as typed (known or not, so the answers never tell whether an
account exists) and an opaque key of the client's address, which the HTTP
layer passes in (`server/clients.py`; the domain never sees an address).
After `login_max_failures` failures of one pair, that pair must wait before
its next try: 1 s, then 2, 4, 8 ... seconds, at most `login_lockout_seconds`.
Every attempt from then on counts, the refused ones too, so trying early
only makes the wait longer. While it waits it is answered `TooManyAttempts`
without the password being checked (a flood costs no hashing, and writes
nothing). A pair that has been quiet for `login_lockout_seconds` is
forgotten, and a success forgets it at once. A stranger's wrong passwords
therefore slow down only the stranger: the owner, from any other address,
logs in with the right password (and code) as usual. (Behind one shared
address, a carrier's NAT, owner and stranger are one client: the owner
waits at most `login_lockout_seconds`, or logs in over another network.)

The counts live in memory only, in `LoginThrottle`: never on disk, never in
a log, gone at a restart. gunicorn runs several worker processes, each with
its own counts, so a guesser whose connections land on every worker gets up
to workers × the allowance; the waits still grow in each.

Wrong current passwords and wrong codes on the own-account endpoints count
against the same throttle, so a stolen session cannot guess for long either.

A session is one login: its access and refresh tokens share a session id.
Logging out ends the session; disabling an account, setting its password or
resetting its second factor ends all of its sessions (the account's session
generation moves on, and tokens carry the generation they were issued under).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from typing import Callable

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

from ..archive import Archive
from ..errors import (
    BadCredentials,
    InvalidInput,
    SecondFactorAlreadyOn,
    SecondFactorRequired,
    TooManyAttempts,
    WrongSecondFactor,
)
from ..records.rows import Staff
from ..timefmt import format_time
from . import audit
from .accounts import MAX_PASSWORD_BYTES, check_new_password, hash_password, password_matches

# Checked against when the username is unknown, so that answer takes as long
# as a wrong password. Its password is random and was thrown away.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=1$Vs8sV108VRoQpLe18n5A6Q$YKwP75zOsxlyb+FOw012ZMu60RDBBH8mVB7z8nAUGP0"


# -- throttling ---------------------------------------------------------------

class LoginThrottle:
    """Failed attempts per (username, client key), in this process's memory
    only (see the module docstring). Thread-safe; holds at most
    `max_entries` pairs (about 450 bytes each); when full it drops the
    longest-quiet pair that is not waiting (among the 64 oldest), so a flood
    of made-up usernames costs bounded memory and does not push out a pair
    that was made to wait.

    `free_failures` failures of a pair cost nothing. From then on every
    attempt of the pair, checked or refused, counts, and makes it wait
    2 ** (attempts - free_failures) seconds from then, at most
    `longest_wait`: trying again early only makes the wait longer. A pair
    quiet for `longest_wait` seconds (and not waiting) is forgotten. `now`
    is the clock, in seconds."""

    def __init__(self, free_failures: int, longest_wait: float, *, now: Callable[[], float],
                 max_entries: int = 20_000):
        self.free_failures = max(1, int(free_failures))
        self.longest_wait = float(longest_wait)
        self.max_entries = max_entries
        self._now = now
        self._lock = threading.Lock()
        # (username, client) -> [attempts counted, last counted at, may try again at], oldest first.
        self._pairs: OrderedDict[tuple[str, str], list] = OrderedDict()

    def refuse(self, username: str, client: str) -> int:
        """0 when the pair may try now. While it must wait, the attempt is
        counted (the wait grows) and the new wait is returned, in whole
        seconds (rounded up): refuse the attempt without checking it."""
        now = self._now()
        with self._lock:
            entry = self._live(username, client, now)
            if entry is None or now >= entry[2]:
                return 0
            return math.ceil(self._count(username, client, entry, now))

    def failed(self, username: str, client: str) -> tuple[int, float]:
        """Count a failed (checked) attempt; returns the pair's attempts so
        far and how long (seconds) it must now wait (0: none)."""
        now = self._now()
        with self._lock:
            entry = self._live(username, client, now)
            if entry is None:
                entry = self._pairs[(username, client)] = [0, now, now]
                self._trim(now)
            wait = self._count(username, client, entry, now)
            return entry[0], wait

    def succeeded(self, username: str, client: str) -> None:
        """Forget the pair: its owner got in."""
        with self._lock:
            self._pairs.pop((username, client), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pairs)

    def _count(self, username: str, client: str, entry: list, now: float) -> float:
        entry[0] += 1
        entry[1] = now
        wait = 0.0
        if entry[0] >= self.free_failures:
            wait = min(2.0 ** min(entry[0] - self.free_failures, 64), self.longest_wait)
        entry[2] = now + wait
        self._pairs.move_to_end((username, client))
        return wait

    def _live(self, username: str, client: str, now: float) -> list | None:
        entry = self._pairs.get((username, client))
        if entry is not None and now >= entry[2] and now - entry[1] >= self.longest_wait:
            del self._pairs[(username, client)]
            return None
        return entry

    def _trim(self, now: float) -> None:
        # Pairs are kept in the order they last counted. Over the bound, drop
        # the longest-quiet pair that is not waiting (one that is, is being
        # guessed at: keeping it keeps its wait), looking at a few only, so a
        # flood of new usernames costs a constant time per failure.
        while len(self._pairs) > self.max_entries:
            victim = None
            for looked, (key, entry) in enumerate(self._pairs.items()):
                if now >= entry[2] or looked >= 64:
                    victim = key
                    break
            del self._pairs[victim if victim is not None else next(iter(self._pairs))]


def login_throttle(archive: Archive) -> LoginThrottle:
    """The archive's throttle, made on first use from its settings and clock."""
    throttle = getattr(archive, "_login_throttle", None)
    if throttle is None:
        with _THROTTLE_MADE:
            throttle = getattr(archive, "_login_throttle", None)
            if throttle is None:
                settings = archive.settings
                throttle = LoginThrottle(settings.login_max_failures, settings.login_lockout_seconds,
                                         now=lambda: archive.clock().timestamp())
                archive._login_throttle = throttle
    return throttle


_THROTTLE_MADE = threading.Lock()


def _refuse_while_throttled(archive: Archive, username: str, client: str) -> None:
    left = login_throttle(archive).refuse(username, client)
    if left > 0:
        raise TooManyAttempts("Too many failed attempts for this username from here; wait before trying again.",
                              retry_after=left)


# -- logging in ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Login:
    """A login that succeeded: what a new session (tokens or the console's
    cookie) needs."""

    id: int
    username: str
    role: str
    organisation_id: int | None
    session_generation: int
    totp_enabled: bool
    totp_setup_required: bool


def authenticate_staff(archive: Archive, username, password, totp_code=None, *, client: str) -> Login:
    """Check a login and return what a new session needs (a `Login`: the login
    views, `server/public.py` among them, read it by key): `id`,
    `username`, `role`, `organisation_id`, `session_generation`,
    `totp_enabled` and `totp_setup_required` (the operator requires a
    second factor for this role and the account has none: the session may
    only set one up).

    `client` is an opaque key for where the attempt comes from (never an
    address): failures are throttled per (username, client).

    Raises `TooManyAttempts` while that pair must wait (nothing checked);
    `BadCredentials` for an unknown user, a wrong password, a disabled
    account or a wrong or replayed TOTP code alike; `SecondFactorRequired`
    when the password is right and the account has TOTP on but no code was
    sent. Every outcome but a throttled one is in the audit log."""
    if not isinstance(username, str) or not isinstance(password, str) \
            or len(password.encode("utf-8", "replace")) > MAX_PASSWORD_BYTES or not 0 < len(username) <= 64:
        raise BadCredentials("Wrong username or password.")
    now = archive.clock()
    _refuse_while_throttled(archive, username, client)
    row = archive.database.fetch_one(Staff, "SELECT * FROM staff WHERE username = ?", [username])
    if row is None:
        # Spend the same effort as a real check so timing does not tell.
        password_matches(password, _DUMMY_HASH)
        _count_failure(archive, username, client, None, "unknown_user")
    if not password_matches(password, row.password_hash):
        _count_failure(archive, username, client, row, "wrong_password")
    if row.disabled_at is not None:
        _count_failure(archive, username, client, row, "disabled")
    totp_enabled = row.totp_enabled_at is not None
    if totp_enabled:
        if totp_code in (None, ""):
            raise SecondFactorRequired("This account has a second factor: send the 6-digit code from the "
                                       "authenticator app as totp.")
        secret = _totp_secret(archive, row)
        step = matching_step(secret, totp_code, now.timestamp()) if secret else None
        if step is None or (row.totp_last_step is not None and step <= row.totp_last_step):
            _count_failure(archive, username, client, row, "wrong_totp")
    with archive.database.transaction() as db:
        if totp_enabled:
            db.execute("UPDATE staff SET totp_last_step = ? WHERE id = ?", [step, row.id])
        audit.append_entry(db, at=format_time(now), actor=f"staff:{username}", action="staff.login",
                           organisation_id=row.organisation_id,
                           detail={"username": username, "second_factor": totp_enabled})
    login_throttle(archive).succeeded(username, client)
    return Login(id=row.id, username=row.username, role=row.role, organisation_id=row.organisation_id,
                 session_generation=row.session_generation or 0, totp_enabled=totp_enabled,
                 totp_setup_required=second_factor_setup_required(archive, row))


def second_factor_setup_required(archive: Archive, row: Staff) -> bool:
    """True when the operator requires TOTP for custodians
    (`WITNESS_REQUIRE_CUSTODIAN_TOTP`) and this custodian has none yet."""
    return archive.settings.require_custodian_totp and row.role == "custodian" and row.totp_enabled_at is None


def _count_failure(archive: Archive, username: str, client: str, row: Staff | None, reason: str):
    """Record a failed login, then raise `BadCredentials`."""
    _record_failure(archive, username, client, row, reason)
    raise BadCredentials("Wrong username or password.")


def _record_failure(archive: Archive, username: str, client: str, row: Staff | None, reason: str) -> None:
    """Count a failure against (username, client) and write it to the audit
    log (with the username, never the client); when it starts a wait, that
    is written too (`staff.login_throttled`). An unknown username's entries
    belong to no organisation, so only the operator sees them."""
    failures, wait = login_throttle(archive).failed(username, client)
    organisation_id = row.organisation_id if row else None
    actor = f"staff:{username}" if row else "anonymous"
    with archive.database.transaction() as db:
        at = archive.now()
        audit.append_entry(db, at=at, actor=actor, action="staff.login_failed",
                           organisation_id=organisation_id, detail={"username": username, "reason": reason})
        if wait > 0:
            audit.append_entry(db, at=at, actor="system", action="staff.login_throttled",
                               organisation_id=organisation_id,
                               detail={"username": username, "failures": failures, "wait_seconds": math.ceil(wait)})


# -- sessions ---------------------------------------------------------------

def staff_session(archive: Archive, staff_id: int, session_id: str | None) -> Staff | None:
    """The account behind a staff token (its `session_generation` 0 when
    never moved on), if the account is active and the session has not
    ended; else None. One query, run on every request."""
    found = archive.database.one(
        """SELECT s.*, EXISTS(SELECT 1 FROM ended_sessions e WHERE e.sid = ?) AS ended
           FROM staff s WHERE s.id = ?""", [session_id or "", staff_id])
    if found is None or found["ended"]:
        return None
    row = Staff.of(found)
    if row.disabled_at is not None:
        return None
    return dataclasses.replace(row, session_generation=row.session_generation or 0)


def end_session(archive: Archive, session_id: str, expires_at: int, *, actor: str, organisation_id: int) -> None:
    """End a session (logout): its tokens are refused from now on. `expires_at`
    (Unix time) is when its refresh token expires anyway, after which the
    record is dropped."""
    with archive.database.transaction() as db:
        now = archive.clock()
        db.execute("DELETE FROM ended_sessions WHERE expires_at < ?", [int(now.timestamp())])
        db.upsert("ended_sessions", {"sid": session_id, "ended_at": format_time(now), "expires_at": expires_at},
                  key=["sid"])
        audit.append_entry(db, at=format_time(now), actor=actor, action="staff.logout",
                           organisation_id=organisation_id, detail={})


# -- passwords and second factors ------------------------------------------

def change_own_password(archive: Archive, staff_id: int, current_password, new_password, *, client: str) -> None:
    """Set a new password after checking the current one; every session of
    the account ends (log in again). A wrong current password counts as a
    failed login for (username, `client`), so a stolen session cannot be
    used to guess it for long. Raises `InvalidInput`
    (`wrong_current_password`, `weak_password`) and `TooManyAttempts` while
    that pair must wait (nothing checked)."""
    row = archive.database.fetch_one(Staff, "SELECT * FROM staff WHERE id = ?", [staff_id])
    _refuse_while_throttled(archive, row.username, client)
    if not isinstance(current_password, str) \
            or len(current_password.encode("utf-8", "replace")) > MAX_PASSWORD_BYTES \
            or not password_matches(current_password, row.password_hash):
        _record_failure(archive, row.username, client, row, "wrong_current_password")
        raise InvalidInput("wrong_current_password", "current_password is not this account's password.")
    login_throttle(archive).succeeded(row.username, client)
    new_hash = hash_password(check_new_password(new_password, username=row.username))
    with archive.database.transaction() as db:
        db.execute("UPDATE staff SET password_hash = ?, session_generation = COALESCE(session_generation, 0) + 1 "
                   "WHERE id = ?", [new_hash, staff_id])
        audit.append_entry(db, at=archive.now(), actor=f"staff:{row.username}", action="staff.password_changed",
                           organisation_id=row.organisation_id, detail={"username": row.username})


def remove_own_totp(archive: Archive, staff_id: int, code, *, client: str) -> bool:
    """Turn the account's own second factor off, proven by a current code
    from its app (one not used before: a code seen over a shoulder at a
    login does not work again). To replace a factor, remove it, then set up
    a new one. The account's sessions go on: whoever sends the code holds
    the factor. A setup started but not confirmed is dropped without a code.
    Returns whether a confirmed factor was removed.

    A wrong code counts as a failed login for (username, `client`), like a
    wrong current password. Raises `WrongSecondFactor` for a wrong, replayed
    or missing code and `TooManyAttempts` while that pair must wait (nothing
    checked)."""
    row = archive.database.fetch_one(Staff, "SELECT * FROM staff WHERE id = ?", [staff_id])
    if row.totp_enabled_at is None:
        if row.totp_secret is not None:
            with archive.database.transaction() as db:
                db.execute("UPDATE staff SET totp_secret = NULL WHERE id = ? AND totp_enabled_at IS NULL", [staff_id])
        return False
    _refuse_while_throttled(archive, row.username, client)
    now = archive.clock()
    secret = _totp_secret(archive, row)
    step = matching_step(secret, code, now.timestamp()) if secret else None
    if step is None or (row.totp_last_step is not None and step <= row.totp_last_step):
        _record_failure(archive, row.username, client, row, "wrong_totp_to_remove")
        raise WrongSecondFactor("That is not a current code from this account's authenticator app (each code works "
                                "once: after logging in with one, wait for the next). Lost the app? A custodian "
                                "can reset the second factor.")
    login_throttle(archive).succeeded(row.username, client)
    with archive.database.transaction() as db:
        db.execute("UPDATE staff SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL "
                   "WHERE id = ?", [staff_id])
        audit.append_entry(db, at=format_time(now), actor=f"staff:{row.username}", action="staff.totp_removed",
                           organisation_id=row.organisation_id, detail={"username": row.username})
    return True


def start_totp_setup(archive: Archive, staff_id: int) -> dict:
    """Make a new TOTP secret for the account (replacing one not yet
    confirmed) and return `secret` (base32, for typing) and `otpauth_uri`
    (for a QR code). The second factor is on only after `confirm_totp`.
    Raises `SecondFactorAlreadyOn` if one is confirmed already."""
    secret = new_totp_secret()
    with archive.database.transaction() as db:
        row = db.fetch_one(Staff, "SELECT * FROM staff WHERE id = ?", [staff_id])
        if row.totp_enabled_at is not None:
            raise SecondFactorAlreadyOn("A second factor is already set up. To replace it, remove it first (POST "
                                        "/v1/auth/totp/remove with a current code); lost the app? A custodian can "
                                        "reset it.")
        db.execute("UPDATE staff SET totp_secret = ? WHERE id = ?",
                   [_seal(archive, row.id, secret), staff_id])
        audit.append_entry(db, at=archive.now(), actor=f"staff:{row.username}", action="staff.totp_setup_started",
                           organisation_id=row.organisation_id, detail={"username": row.username})
    return _totp_setup_answer(archive, secret, row.username)


def confirm_totp(archive: Archive, staff_id: int, code) -> None:
    """Turn the second factor on once the user proves their app shows the
    right code. Raises `WrongSecondFactor` for a wrong code or when no setup
    was started, `SecondFactorAlreadyOn` when it is on already."""
    now = archive.clock()
    with archive.database.transaction() as db:
        row = db.fetch_one(Staff, "SELECT * FROM staff WHERE id = ?", [staff_id])
        if row.totp_enabled_at is not None:
            raise SecondFactorAlreadyOn("A second factor is already set up.")
        if row.totp_secret is None:
            raise WrongSecondFactor("Start with POST /v1/auth/totp to get a secret, then confirm a code from it.")
        secret = _totp_secret(archive, row)
        step = matching_step(secret, code, now.timestamp()) if secret else None
        if step is None:
            raise WrongSecondFactor("That code does not match; check the authenticator app's clock and try the "
                                    "current code.")
        db.execute("UPDATE staff SET totp_enabled_at = ?, totp_last_step = ? WHERE id = ?",
                   [format_time(now), step, staff_id])
        audit.append_entry(db, at=format_time(now), actor=f"staff:{row.username}", action="staff.totp_enabled",
                           organisation_id=row.organisation_id, detail={"username": row.username})


def pending_totp_setup(archive: Archive, staff_id: int) -> dict | None:
    """The second factor the account started setting up but has not
    confirmed: `secret` (base32) and `otpauth_uri`, as `start_totp_setup`
    gave them, so a page can show them again until a code confirms it. None
    when no setup is pending (none started, one already on, or the secret
    was sealed under keys this server no longer holds). Not audited: it
    shows the account's own secret to its own session. Raises nothing."""
    row = archive.database.fetch_one(Staff, "SELECT * FROM staff WHERE id = ?", [staff_id])
    if row is None or row.totp_enabled_at is not None or row.totp_secret is None:
        return None
    secret = _totp_secret(archive, row)
    if secret is None:
        return None
    return _totp_setup_answer(archive, secret, row.username)


def _totp_setup_answer(archive: Archive, secret: bytes, username: str) -> dict:
    return {"secret": secret_base32(secret),
            "otpauth_uri": provisioning_uri(secret, username, archive.settings.totp_issuer)}


def _seal(archive: Archive, staff_id: int, secret: bytes) -> bytes:
    return seal_stored_secret(stored_secret_key(archive.keys.token_secret), secret, f"totp staff:{staff_id}")


def _totp_secret(archive: Archive, row: Staff) -> bytes | None:
    try:
        return open_stored_secret(stored_secret_key(archive.keys.token_secret), row.totp_secret,
                                  f"totp staff:{row.id}")
    except InvalidEvidence:
        # Sealed under other keys (the keys folder was replaced): no code can
        # match; a custodian resets the second factor.
        return None
