"""An audit entry as the API shows it and a bundle's custody log carries it
(one canonical JSON object a line, oldest first), and the hash that chains
entries together. docs/audit.md describes the log; `sync.audit` keeps it.

An entry's `sha256` covers its own fields and the previous entry's hash
(`prev_sha256`); an entry about a recording also links to the previous entry
about that recording (`recording_prev_sha256`, `GENESIS` for its first), so
a recording's custody log is a chain that can be checked on its own.
"""

from __future__ import annotations

import hashlib
import json

from crypto.hashing import canonical_json

from .canonical import read_canonical_object

GENESIS = "0" * 64
# Fields every entry's digest covers (present even when null), in version 1
# of the log; fields added since are covered when they are set, so entries
# written before them still verify.
_CORE_FIELDS = ("id", "at", "actor", "action", "recording_id", "detail", "prev_sha256")
_ADDED_FIELDS = ("organisation_id", "recording_prev_sha256")
# Every field of an entry: what is stored, and what the API and a custody log show.
ENTRY_FIELDS = (*_CORE_FIELDS, *_ADDED_FIELDS, "sha256")
# Entries about copy requests are the only ones whose detail a bundle may
# withhold: another case's reference and purpose, a custodian's reasons.
_WITHHOLDABLE_PREFIX = "copy."


def entry_digest(entry: dict) -> str:
    """SHA-256 (hex) of an entry's canonical JSON, `sha256` itself excluded.
    `detail` may be the stored JSON text or the object. Raises `KeyError`,
    `TypeError` or `ValueError` when the entry lacks a field or holds one
    JSON cannot carry."""
    fields = {k: entry[k] for k in _CORE_FIELDS}
    fields.update({k: entry[k] for k in _ADDED_FIELDS if entry.get(k) is not None})
    fields["detail"] = json.loads(fields["detail"]) if isinstance(fields["detail"], str) else fields["detail"]
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def public_entry(row: dict) -> dict:
    """An entry as the API shows it: `detail` (stored as JSON text) as an
    object, every hash link included so a reader can check the chain."""
    entry = {k: row[k] for k in ENTRY_FIELDS if k != "detail"}
    entry["detail"] = json.loads(row["detail"])
    return entry


def for_copy(entry: dict, request_id: str) -> dict:
    """A public entry as the custody log of copy request `request_id`
    carries it: an entry about *another* copy request keeps who, what and
    when, but its detail is withheld (`detail` null, `detail_withheld`
    true), as the API withholds other lawyers' requests. Its own hash then
    cannot be recomputed, but the next entry's link still covers it."""
    if entry["action"].startswith(_WITHHOLDABLE_PREFIX) and entry["detail"].get("request_id") != request_id:
        return {**entry, "detail": None, "detail_withheld": True}
    return entry


def may_be_withheld(entry: dict) -> bool:
    """Whether a custody log entry marked `detail_withheld` withholds only
    what may be: the detail of a copy request's entry, and nothing more."""
    return entry.get("detail") is None and str(entry.get("action", "")).startswith(_WITHHOLDABLE_PREFIX)


def custody_line(entry: dict) -> bytes:
    """One line of a custody log: the entry's canonical JSON and a newline."""
    return canonical_json(entry) + b"\n"


def read_custody_line(line: bytes, number: int) -> dict:
    """The entry on line `number` (from 1) of a custody log, without its
    newline. Raises `MalformedEvidence` unless it is canonical JSON."""
    return read_canonical_object(line, f"line {number} of the custody log")


# The transparency log's leaf for an audit entry (docs/transparency.md): a
# salted commitment to the entry's hash, so the public log reveals nothing of
# the footage or the people until a bundle opens its own entries' salts.
LOG_LEAF_DOMAIN = b"witness-sync/v1 audit-entry\n"
LOG_SALT_BYTES = 32


def log_leaf(salt: bytes, entry_sha256: str) -> bytes:
    """The 32-byte leaf data of the audit entry whose `sha256` (hex) is
    `entry_sha256`: SHA-256(LOG_LEAF_DOMAIN || salt || the entry hash's 32
    bytes). Raises `ValueError` for a salt of the wrong length or a hash that
    is not 64 hex digits."""
    if len(salt) != LOG_SALT_BYTES or len(entry_sha256) != 64:
        raise ValueError("a log leaf needs a 32-byte salt and a SHA-256 in hex")
    return hashlib.sha256(LOG_LEAF_DOMAIN + salt + bytes.fromhex(entry_sha256)).digest()
