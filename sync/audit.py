"""The append-only, hash-chained audit log.

Each entry's `sha256` covers its own fields and the previous entry's hash
(`prev_sha256`), so editing or deleting any row breaks every link after it.
Entries are appended inside the caller's write transaction, which holds
SQLite's write lock, so two processes can never chain onto the same parent.
"""

from __future__ import annotations

import hashlib
import json

import sqlite_utils

from crypto.hashing import canonical_json

GENESIS = "0" * 64


def entry_digest(entry: dict) -> str:
    """SHA-256 (hex) of an entry's canonical JSON, `sha256` itself excluded."""
    fields = {k: entry[k] for k in ("id", "at", "actor", "action", "recording_id", "detail", "prev_sha256")}
    fields["detail"] = json.loads(fields["detail"]) if isinstance(fields["detail"], str) else fields["detail"]
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def append_entry(
    db: sqlite_utils.Database,
    *,
    at: str,
    actor: str,
    action: str,
    recording_id: str | None = None,
    detail: dict | None = None,
) -> dict:
    """Append one entry inside the caller's open write transaction and return
    it. `actor` is `device:<id>`, `staff:<username>` or `system`."""
    last = next(iter(db.query("SELECT id, sha256 FROM audit ORDER BY id DESC LIMIT 1")), None)
    entry = {
        "id": (last["id"] + 1) if last else 1,
        "at": at,
        "actor": actor,
        "action": action,
        "recording_id": recording_id,
        "detail": canonical_json(detail or {}).decode("utf-8"),
        "prev_sha256": last["sha256"] if last else GENESIS,
    }
    entry["sha256"] = entry_digest(entry)
    db["audit"].insert(entry)
    return entry
