"""Who may talk to the server: organisations, their anonymous devices and
enrollment codes, and their named staff.

A server hosts one or more organisations. Devices join one through an
enrollment code, or the default organisation under open enrollment; staff
belong to one. Nobody sees another organisation's recordings.

Devices are anonymous: a random id, optionally an Ed25519 public key for chunk
signatures, and the enrollment code they joined with. Staff have one role each
and an Argon2id password hash (PHC string, from `cryptography`). Logging in
(passwords, second factors, throttling, sessions) is `sync.logins`.
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

from ..archive import Archive
from ..errors import EnrollmentRefused, Forbidden, InvalidInput, NotFound, OwnAccountElsewhere
from ..records import DEFAULT_ORGANISATION_ID
from ..records.rows import Device, EnrollmentCode, Organisation, Staff
from . import audit
from .identifiers import parse_canonical_uuid
from .paging import make_cursor, read_cursor, split_page

STAFF_ROLES = ("observer", "lawyer", "custodian")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,63}")
_ENROLLMENT_CODE = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_PASSWORD_BYTES = 1024
MIN_PASSWORD_CHARS = 12
MAX_NOTE_CHARS = 200
# RFC 9106's second recommended memory and passes (64 MiB, 3 passes), one lane.
_ARGON2 = dict(length=32, iterations=3, lanes=1, memory_cost=64 * 1024)
# Concurrent Argon2id calls in one process hang for good with cryptography 50
# on OpenSSL 3.x/4.x when lanes > 1 (verified here: two logins at once froze
# a worker). One hash at a time per process also caps each process at 64 MiB
# of hashing memory however many logins arrive.
_ARGON2_TURN = threading.Lock()


# -- organisations ---------------------------------------------------------

def create_organisation(archive: Archive, slug: str, name: str, *, actor: str = "operator") -> Organisation:
    """Create an organisation and return it. Raises `InvalidInput` for a
    malformed or taken slug, or an empty name."""
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise InvalidInput("invalid_slug", "An organisation's short name is 2-64 characters: lowercase letters, "
                                           "digits or '-'.")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        raise InvalidInput("invalid_name", "An organisation's name is 1-200 characters.")
    with archive.database.transaction() as db:
        if db.one("SELECT 1 FROM organisations WHERE slug = ?", [slug]):
            raise InvalidInput("slug_taken", f"An organisation named {slug!r} already exists.")
        now = archive.now()
        organisation_id = db.insert("organisations", {"slug": slug, "name": name.strip(), "created_at": now},
                                    returning="id")
        audit.append_entry(db, at=now, actor=actor, action="organisation.created", organisation_id=organisation_id,
                           detail={"slug": slug, "name": name.strip()})
    return organisation(archive, organisation_id)


def organisation(archive: Archive, organisation_id: int) -> Organisation:
    """The organisation with this id. Raises `NotFound`."""
    row = archive.database.fetch_one(Organisation, "SELECT * FROM organisations WHERE id = ?", [organisation_id])
    if row is None:
        raise NotFound("No such organisation.")
    return row


def organisation_by_slug(archive: Archive, slug: str) -> Organisation:
    """The organisation with this short name. Raises `NotFound`."""
    row = archive.database.fetch_one(Organisation, "SELECT * FROM organisations WHERE slug = ?", [slug])
    if row is None:
        raise NotFound(f"No organisation is named {slug!r}; `witness organisations` lists them.")
    return row


def list_organisations(archive: Archive) -> list[dict]:
    """Every organisation, oldest first, with how many staff and devices it has."""
    return archive.database.query(
        """SELECT o.id, o.slug, o.name, o.created_at,
                  (SELECT COUNT(*) FROM staff s WHERE s.organisation_id = o.id) AS staff,
                  (SELECT COUNT(*) FROM devices d WHERE d.organisation_id = o.id) AS devices
           FROM organisations o ORDER BY o.id""")


# -- devices ----------------------------------------------------------------

def register_device(
    archive: Archive, *, enrollment_code: str | None = None, public_key_pem: str | None = None
) -> str:
    """Register an anonymous device and return its id (a UUID). It joins the
    enrollment code's organisation, or the default one under open enrollment.

    Raises `EnrollmentRefused` when enrollment is closed and no code is
    given, or the code is unknown or revoked; `InvalidInput` when
    `public_key_pem` is not an Ed25519 public key in PEM.
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
            code = db.fetch_one(EnrollmentCode, "SELECT * FROM enrollment_codes WHERE code = ?", [enrollment_code])
            if code is None or code.revoked_at is not None:
                raise EnrollmentRefused("That enrollment code is not valid on this server; ask the organisation "
                                        "for a current one.")
            organisation_id = code.organisation_id
        elif archive.settings.open_enrollment:
            organisation_id = DEFAULT_ORGANISATION_ID
        else:
            raise EnrollmentRefused("This server needs an enrollment code; ask the organisation running it.")
        now = archive.now()
        db.insert("devices", {"id": device_id, "organisation_id": organisation_id, "created_at": now,
                  "public_key_pem": public_key_pem, "enrollment_code": enrollment_code})
        audit.append_entry(db, at=now, actor=f"device:{device_id}", action="device.registered",
                           organisation_id=organisation_id,
                           detail={"signs_chunks": public_key_pem is not None,
                                   "enrolled_with_code": enrollment_code is not None})
    return device_id


def active_device(archive: Archive, device_id: str) -> Device | None:
    """The device's row if it exists and is not revoked, else None."""
    row = archive.database.fetch_one(Device, "SELECT * FROM devices WHERE id = ?", [device_id])
    return row if row is not None and row.revoked_at is None else None


def list_devices(archive: Archive, organisation_id: int, *, limit: int = 50,
                 cursor: str | None = None) -> tuple[list[dict], str | None]:
    """A page of the organisation's devices, newest first, with how many
    recordings each made and when it last uploaded. Raises `InvalidInput`
    for a malformed cursor."""
    where, params = ["d.organisation_id = ?"], [organisation_id]
    if cursor is not None:
        created_at, device_id = read_cursor("devices", cursor, (str, str))
        where.append("(d.created_at < ? OR (d.created_at = ? AND d.id < ?))")
        params += [created_at, created_at, device_id]
    rows = archive.database.query(
        f"""SELECT d.id, d.created_at, d.public_key_pem IS NOT NULL AS signs_chunks, d.revoked_at, d.revoked_by,
                   (SELECT COUNT(*) FROM recordings r WHERE r.device_id = d.id) AS recordings,
                   (SELECT MAX(r.last_received_at) FROM recordings r WHERE r.device_id = d.id) AS last_received_at
            FROM devices d WHERE {' AND '.join(where)}
            ORDER BY d.created_at DESC, d.id DESC LIMIT ?""", [*params, limit + 1])
    rows, next_cursor = split_page(rows, limit, lambda last: make_cursor("devices", last["created_at"], last["id"]))
    return [_public_device(row) for row in rows], next_cursor


def revoke_device(archive: Archive, organisation_id: int, device_id: str, *, actor: str) -> dict:
    """Revoke a device of the organisation: its tokens stop working at once;
    what it uploaded stays. Revoking a revoked device changes nothing.
    Raises `NotFound` for a device of another organisation or none."""
    with archive.database.transaction() as db:
        row = db.fetch_one(Device, "SELECT * FROM devices WHERE id = ? AND organisation_id = ?",
                           [device_id, organisation_id])
        if row is None:
            raise NotFound("No such device.")
        if row.revoked_at is None:
            now = archive.now()
            db.execute("UPDATE devices SET revoked_at = ?, revoked_by = ? WHERE id = ?", [now, actor, device_id])
            audit.append_entry(db, at=now, actor=actor, action="device.revoked", organisation_id=organisation_id,
                               detail={"device_id": device_id})
    return device_detail(archive, organisation_id, device_id)


def device_detail(archive: Archive, organisation_id: int, device_id: str) -> dict:
    """One device of the organisation, as `list_devices` shows it. Raises `NotFound`."""
    row = archive.database.one(
        """SELECT d.id, d.created_at, d.public_key_pem IS NOT NULL AS signs_chunks, d.revoked_at, d.revoked_by,
                  (SELECT COUNT(*) FROM recordings r WHERE r.device_id = d.id) AS recordings,
                  (SELECT MAX(r.last_received_at) FROM recordings r WHERE r.device_id = d.id) AS last_received_at
           FROM devices d WHERE d.id = ? AND d.organisation_id = ?""", [device_id, organisation_id])
    if row is None:
        raise NotFound("No such device.")
    return _public_device(row)


def _public_device(row: dict) -> dict:
    # A projection with counts (`list_devices`), not a devices row.
    return {"device_id": row["id"], "created_at": row["created_at"], "signs_chunks": bool(row["signs_chunks"]),
            "recordings": row["recordings"], "last_received_at": row["last_received_at"],
            "revoked_at": row["revoked_at"], "revoked_by": row["revoked_by"]}


def parse_device_id(text) -> str:
    """A device id (canonical lowercase UUID); `InvalidInput` otherwise."""
    return parse_canonical_uuid(text, "device_id")


# -- enrollment codes -------------------------------------------------------

def create_enrollment_code(archive: Archive, note: str = "", *, organisation_id: int = DEFAULT_ORGANISATION_ID,
                           actor: str = "operator") -> dict:
    """Make a new random enrollment code for the organisation and return it.
    Raises `InvalidInput` for a note over 200 characters."""
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise InvalidInput("invalid_note", f"note must be text of at most {MAX_NOTE_CHARS} characters.")
    code = secrets.token_urlsafe(12)
    with archive.database.transaction() as db:
        now = archive.now()
        db.insert("enrollment_codes", {"code": code, "organisation_id": organisation_id, "created_at": now,
                  "note": note, "created_by": actor})
        # The code itself stays out of the log: the log is read more widely.
        audit.append_entry(db, at=now, actor=actor, action="enrollment_code.created",
                           organisation_id=organisation_id, detail={"note": note, "code_prefix": code[:4]})
    return enrollment_code(archive, organisation_id, code)


def enrollment_code(archive: Archive, organisation_id: int, code: str) -> dict:
    """One enrollment code of the organisation. Raises `NotFound`."""
    row = archive.database.one(
        """SELECT c.*, (SELECT COUNT(*) FROM devices d WHERE d.enrollment_code = c.code) AS devices
           FROM enrollment_codes c WHERE c.code = ? AND c.organisation_id = ?""", [code, organisation_id])
    if row is None:
        raise NotFound("No such enrollment code.")
    return _public_code(EnrollmentCode.of(row), row["devices"])


def list_enrollment_codes(archive: Archive, organisation_id: int) -> list[dict]:
    """The organisation's enrollment codes, newest first, with how many
    devices joined with each."""
    rows = archive.database.query(
        """SELECT c.*, (SELECT COUNT(*) FROM devices d WHERE d.enrollment_code = c.code) AS devices
           FROM enrollment_codes c WHERE c.organisation_id = ? ORDER BY c.created_at DESC, c.code""",
        [organisation_id])
    return [_public_code(EnrollmentCode.of(row), row["devices"]) for row in rows]


def revoke_enrollment_code(archive: Archive, organisation_id: int, code: str, *, actor: str) -> dict:
    """Stop a code from enrolling more devices (those it enrolled stay).
    Raises `NotFound` for a code of another organisation or none."""
    if not isinstance(code, str) or not _ENROLLMENT_CODE.fullmatch(code):
        raise NotFound("No such enrollment code.")
    with archive.database.transaction() as db:
        row = db.fetch_one(EnrollmentCode, "SELECT * FROM enrollment_codes WHERE code = ? AND organisation_id = ?",
                           [code, organisation_id])
        if row is None:
            raise NotFound("No such enrollment code.")
        if row.revoked_at is None:
            now = archive.now()
            db.execute("UPDATE enrollment_codes SET revoked_at = ? WHERE code = ?", [now, code])
            audit.append_entry(db, at=now, actor=actor, action="enrollment_code.revoked",
                               organisation_id=organisation_id, detail={"code_prefix": code[:4]})
    return enrollment_code(archive, organisation_id, code)


def _public_code(row: EnrollmentCode, devices: int) -> dict:
    return {"code": row.code, "note": row.note or "", "created_at": row.created_at,
            "created_by": row.created_by, "revoked_at": row.revoked_at, "devices": devices}


# -- staff ------------------------------------------------------------------

def hash_password(password: str) -> str:
    """Argon2id PHC string of `password` with a fresh random salt."""
    with _ARGON2_TURN:
        return Argon2id(salt=os.urandom(16), **_ARGON2).derive_phc_encoded(password.encode("utf-8"))


def password_matches(password: str, phc: str) -> bool:
    """True if `password` hashes to the PHC string `phc` (Argon2id)."""
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from JSON: no password is that
        secret = b""
    try:
        with _ARGON2_TURN:
            Argon2id.verify_phc_encoded(secret, phc)
        return bool(secret)
    except (InvalidKey, ValueError):
        return False


def check_new_password(password, *, username: str | None = None) -> str:
    """`password` if it is acceptable as a new password; `InvalidInput`
    (`weak_password`) otherwise (the rule: `password_weakness`)."""
    weakness = password_weakness(password, username=username)
    if weakness is not None:
        raise InvalidInput("weak_password", weakness)
    return password


# The strength rule needs no word list download and no dependency: length,
# variety, no pattern, and not one of the passwords (or their stems) that top
# every leaked-password list, nor the service's name or the username.
MIN_DISTINCT_CHARS = 6
_RUNS = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiopasdfghjklzxcvbnm", "qwertzuiopasdfghjklyxcvbnm",
         "azertyuiopqsdfghjklmwxcvbn", "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p", "zaq12wsxcde34rfvbgt56yhnmju78ik,.lo9")
_COMMON_STEMS = frozenset("""
password passwort passw0rd p@ssword p@ssw0rd pass qwerty qwertz azerty asdf iloveyou loveyou welcome letmein
admin administrator root user login changeme default secret master test guest hello whatever trustno
monkey dragon sunshine princess superman batman football baseball basketball soccer hockey shadow freedom
starwars pokemon computer internet michael jennifer jordan hunter ranger buster charlie daniel thomas
abc abcd abc123 qwe qazwsx zaq1 zxcvbn witness witnesssync police
""".split())
_EDGE_NOISE = "0123456789 !@#$%^&*()-_=+[]{};:'\",.<>/?\\|`~"


def password_weakness(password, *, username: str | None = None) -> str | None:
    """Why `password` would be a weak new password, in words for the person
    choosing it, or None when it is acceptable. Refused: fewer than 12
    characters (or over 1024 bytes, or not text); fewer than 6 different
    characters (`000000000000`, `abababababab`); a shorter piece repeated
    (`passwordpassword`); a run along the alphabet, the digits or a keyboard
    row, either way (`123456789012`, `qwertyuiopas`); and one of the most
    common passwords or the service's name or the username, with digits and
    symbols added at either end (`Password2026!`, `iloveyou1234`)."""
    if not isinstance(password, str) or any("\ud800" <= c <= "\udfff" for c in password) \
            or len(password.encode("utf-8", "replace")) > MAX_PASSWORD_BYTES:
        return f"A password is text of at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_BYTES} bytes."
    if len(password) < MIN_PASSWORD_CHARS:
        return f"Passwords need at least {MIN_PASSWORD_CHARS} characters; a few unrelated words make a good one."
    easy = "This password is too easy to guess"
    advice = "; a few unrelated words make a good one."
    if len(set(password)) < MIN_DISTINCT_CHARS:
        return f"{easy}: it needs at least {MIN_DISTINCT_CHARS} different characters{advice}"
    folded = password.casefold()
    for unit in range(1, len(folded) // 2 + 1):
        if len(folded) % unit == 0 and folded[:unit] * (len(folded) // unit) == folded and unit < MIN_PASSWORD_CHARS:
            return f"{easy}: it is a shorter piece repeated{advice}"
    squeezed = "".join(folded.split())
    for run in _RUNS:
        for direction in (run, run[::-1]):
            cycle = direction * (len(squeezed) // len(direction) + 2)
            if squeezed in cycle:
                return f"{easy}: it is a run of neighbouring letters, digits or keys{advice}"
    stem = folded.strip(_EDGE_NOISE)
    if stem and (stem in _COMMON_STEMS or stem.replace(" ", "") in _COMMON_STEMS
                 or (username and stem == username.casefold())):
        return f"{easy}: it is one of the most common passwords, or a name this server knows, with digits or " \
               f"symbols added{advice}"
    return None


def create_staff_user(archive: Archive, username: str, role: str, password: str, *,
                      organisation_id: int = DEFAULT_ORGANISATION_ID, actor: str = "operator") -> dict:
    """Create a staff account in the organisation and return it (as
    `staff_account` shows it). Raises `InvalidInput` for a malformed or
    taken username, an unknown role, or a weak password."""
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise InvalidInput("invalid_username", "Usernames are 2-64 characters: lowercase letters, digits, "
                                               "'.', '_' or '-', starting with a letter or digit.")
    if role not in STAFF_ROLES:
        raise InvalidInput("invalid_role", f"role must be one of {', '.join(STAFF_ROLES)}.")
    password_hash = hash_password(check_new_password(password, username=username))
    with archive.database.transaction() as db:
        if db.one("SELECT 1 FROM staff WHERE username = ?", [username]):
            raise InvalidInput("username_taken", f"A user named {username!r} already exists on this server.")
        now = archive.now()
        staff_id = db.insert("staff", {
            "organisation_id": organisation_id, "username": username, "role": role,
            "password_hash": password_hash, "created_at": now, "session_generation": 0,
        }, returning="id")
        audit.append_entry(db, at=now, actor=actor, action="staff.created", organisation_id=organisation_id,
                           detail={"username": username, "role": role})
    return staff_account(archive, organisation_id, staff_id)


def staff_account(archive: Archive, organisation_id: int, staff_id: int) -> dict:
    """One staff account of the organisation (no secrets). Raises `NotFound`."""
    row = archive.database.fetch_one(Staff, "SELECT * FROM staff WHERE id = ? AND organisation_id = ?",
                                     [staff_id, organisation_id])
    if row is None:
        raise NotFound("No such user.")
    return public_staff(row)


def list_staff(archive: Archive, organisation_id: int) -> list[dict]:
    """The organisation's staff accounts, by username (no secrets)."""
    rows = archive.database.fetch(Staff, "SELECT * FROM staff WHERE organisation_id = ? ORDER BY username",
                                  [organisation_id])
    return [public_staff(row) for row in rows]


def public_staff(row: Staff) -> dict:
    """A staff row as anyone may see it (the API's JSON): never the hash or
    TOTP secret."""
    return {"id": row.id, "username": row.username, "role": row.role,
            "organisation_id": row.organisation_id, "created_at": row.created_at,
            "disabled": row.disabled_at is not None, "disabled_at": row.disabled_at,
            "totp_enabled": row.totp_enabled_at is not None}


def update_staff(archive: Archive, organisation_id: int, staff_id: int, changes, *, by: Staff) -> dict:
    """Apply the custodian `by`'s changes (a JSON object) to an account of
    their organisation:
    `role`, `disabled` (true/false), `password` (a new one), `reset_totp`
    (true: the user must set up a second factor again). Ending access
    (disable, new password, TOTP reset) also ends every session of the user.
    Each change is audited. Returns the account.

    Raises `NotFound` (not of this organisation), `InvalidInput` (unknown
    field or bad value), `Forbidden` (a custodian changing their own role or
    disabling themselves: that is how an organisation locks itself out) and
    `OwnAccountElsewhere` (a custodian setting their own password or
    resetting their own second factor: that needs the current password or a
    current code, on the account endpoints). Nothing changes when it raises."""
    if not isinstance(changes, dict) or not changes:
        raise InvalidInput("invalid_body", "Send a JSON object with role, disabled, password and/or reset_totp.")
    unknown = set(changes) - {"role", "disabled", "password", "reset_totp"}
    if unknown:
        raise InvalidInput("invalid_field", f"Unknown field(s): {', '.join(sorted(unknown))}.")
    if "role" in changes and changes["role"] not in STAFF_ROLES:
        raise InvalidInput("invalid_role", f"role must be one of {', '.join(STAFF_ROLES)}.")
    for flag in ("disabled", "reset_totp"):
        if flag in changes and not isinstance(changes[flag], bool):
            raise InvalidInput(f"invalid_{flag}", f"{flag} must be true or false.")
    if staff_id == by.id:
        # Only the account endpoints, which ask for the current password or
        # a current code, change one's own: a stolen token alone must not.
        if "password" in changes:
            raise OwnAccountElsewhere("Change your own password with POST /v1/auth/password, which asks for the "
                                      "current one.", "password")
        if changes.get("reset_totp") is True:
            raise OwnAccountElsewhere("Remove your own second factor with POST /v1/auth/totp/remove and a current "
                                      "code from the app; lost the app? Ask another custodian to reset it.",
                                      "second_factor")
    password_hash = None
    if "password" in changes:
        target = archive.database.one("SELECT username FROM staff WHERE id = ? AND organisation_id = ?",
                                      [staff_id, organisation_id])
        password_hash = hash_password(check_new_password(changes["password"],
                                                         username=target["username"] if target else None))
    actor = f"staff:{by.username}"
    with archive.database.transaction() as db:
        row = db.fetch_one(Staff, "SELECT * FROM staff WHERE id = ? AND organisation_id = ?",
                           [staff_id, organisation_id])
        if row is None:
            raise NotFound("No such user.")
        if row.id == by.id and (changes.get("disabled") is True or changes.get("role", row.role) != row.role):
            raise Forbidden("You cannot disable your own account or change your own role; ask another custodian.")
        now = archive.now()
        updates, end_sessions = {}, False

        def note(action: str, **detail):
            audit.append_entry(db, at=now, actor=actor, action=action, organisation_id=organisation_id,
                               detail={"username": row.username, **detail})

        if "role" in changes and changes["role"] != row.role:
            updates["role"] = changes["role"]
            note("staff.role_changed", role_before=row.role, role_after=changes["role"])
        if changes.get("disabled") is True and row.disabled_at is None:
            updates["disabled_at"], end_sessions = now, True
            note("staff.disabled")
        if changes.get("disabled") is False and row.disabled_at is not None:
            updates["disabled_at"] = None
            note("staff.enabled")
        if password_hash is not None:
            updates["password_hash"], end_sessions = password_hash, True
            note("staff.password_set")
        if changes.get("reset_totp") is True and (row.totp_secret is not None or row.totp_enabled_at):
            updates.update(totp_secret=None, totp_enabled_at=None, totp_last_step=None)
            end_sessions = True
            note("staff.totp_reset")
        if end_sessions:
            updates["session_generation"] = (row.session_generation or 0) + 1
        if updates:
            db.execute(f"UPDATE staff SET {', '.join(f'{column} = ?' for column in updates)} WHERE id = ?",
                       [*updates.values(), staff_id])
    return staff_account(archive, organisation_id, staff_id)


def parse_staff_id(text) -> int:
    """A staff id from a path: a positive decimal integer; `InvalidInput`."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > 12 \
            or text.startswith("0"):
        raise InvalidInput("invalid_staff_id", "A user id is a positive integer.")
    return int(text)

