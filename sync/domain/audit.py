"""The append-only, hash-chained audit log.

Each entry's `sha256` covers its own fields and the previous entry's hash
(`prev_sha256`), so editing or deleting any row breaks a link after it.
Entries about a recording also link to the previous entry about the same
recording (`recording_prev_sha256`), so a recording's custody log is a chain
that can be checked on its own, without the rest of the log.
The entry's fields, its hash and its public shape are an evidence format
(`sync/evidence/custody.py`): copy bundles carry entries, and
`witness-verify` checks them without this module.

Deleting the *newest* rows leaves a shorter chain that is still whole, so the
head (id and hash of the newest entry) is also written to `meta` with every
append; `verify_chain` compares the two, and operators can record the head
elsewhere (`witness audit-verify` prints it) to compare later.

Entries are appended inside the caller's write transaction, which holds
the records' one writer lock (SQLite's write lock, or the PostgreSQL
adapter's advisory lock; sync/records/), so two processes, on one node or
several, can never chain onto the same parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from crypto.hashing import canonical_json
from ..archive import Archive
from ..errors import InvalidInput
from ..evidence.custody import ENTRY_FIELDS, GENESIS, entry_digest, public_entry
from ..records import Unit
from ..timefmt import normalize_time
from .paging import make_cursor, read_cursor, split_page

_HEAD_KEY = "audit_head"


def append_entry(
    db: Unit,
    *,
    at: str,
    actor: str,
    action: str,
    recording_id: str | None = None,
    organisation_id: int | None = None,
    detail: dict | None = None,
) -> dict:
    """Append one entry inside the caller's open write transaction and return
    it. `actor` is `device:<id>`, `staff:<username>`, `operator`, `system` or
    `anonymous`. An entry about a recording belongs to the recording's
    organisation (looked up unless the caller passes it); otherwise to
    `organisation_id` (None: the whole server)."""
    last = next(iter(db.query("SELECT id, sha256 FROM audit ORDER BY id DESC LIMIT 1")), None)
    recording_prev = None
    if recording_id is not None:
        if organisation_id is None:
            owner = next(iter(db.query("SELECT organisation_id FROM recordings WHERE id = ?", [recording_id])), None)
            organisation_id = owner["organisation_id"] if owner is not None else None
        previous = next(iter(db.query(
            "SELECT sha256 FROM audit WHERE recording_id = ? ORDER BY id DESC LIMIT 1", [recording_id])), None)
        recording_prev = previous["sha256"] if previous else GENESIS
    entry = {
        "id": (last["id"] + 1) if last else 1,
        "at": at,
        "actor": actor,
        "action": action,
        "recording_id": recording_id,
        "organisation_id": organisation_id,
        "detail": canonical_json(detail or {}).decode("utf-8"),
        "prev_sha256": last["sha256"] if last else GENESIS,
        "recording_prev_sha256": recording_prev,
    }
    entry["sha256"] = entry_digest(entry)
    db.execute(f"INSERT INTO audit ({', '.join(ENTRY_FIELDS)}) VALUES ({', '.join('?' for _ in ENTRY_FIELDS)})",
               [entry[column] for column in ENTRY_FIELDS])
    db.upsert("meta", {"key": _HEAD_KEY, "value": f"{entry['id']}:{entry['sha256']}"}, key=["key"])
    return entry


def record(archive: Archive, *, actor: str, action: str, recording_id: str | None = None,
           organisation_id: int | None = None, detail: dict | None = None) -> dict:
    """Append one entry in a transaction of its own (for reads worth a trace:
    views and downloads) and return it."""
    with archive.database.transaction() as db:
        return append_entry(db, at=archive.now(), actor=actor, action=action, recording_id=recording_id,
                            organisation_id=organisation_id, detail=detail)


@dataclass
class AuditFilter:
    """What `list_entries` narrows to; every field optional."""

    recording_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: str | None = None  # inclusive
    until: str | None = None  # inclusive


def list_entries(archive: Archive, organisation_id: int | None, filters: AuditFilter, *,
                 limit: int = 100, cursor: str | None = None, newest_first: bool = True,
                 operator: bool = False) -> tuple[list[dict], str | None]:
    """A page of the entries an organisation's custodians may read: their
    organisation's only. Server-wide entries (no organisation: above all
    failed logins under usernames no account has, which are often a
    password typed into the wrong field, or a guesser's list) are shown to
    nobody but the operator: with `operator=True`, `organisation_id=None`
    lists every entry (the command line's `audit-log`). Returns `(entries,
    next_cursor)`. Raises `InvalidInput` for a malformed cursor or time."""
    if organisation_id is None and not operator:
        raise ValueError("only the operator lists entries of every organisation")
    where, params = [], []
    if organisation_id is not None:
        where.append("organisation_id = ?")
        params.append(organisation_id)
    for column, value in (("recording_id", filters.recording_id), ("actor", filters.actor),
                          ("action", filters.action)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if filters.since is not None:
        where.append("at >= ?")
        params.append(filters.since)
    if filters.until is not None:
        where.append("at <= ?")
        params.append(filters.until)
    order = "DESC" if newest_first else "ASC"
    if cursor is not None:
        where.append("id < ?" if newest_first else "id > ?")
        params.append(read_cursor(f"audit-{order}", cursor, (int,))[0])
    rows = archive.database.query(
        f"SELECT * FROM audit WHERE {' AND '.join(where) or '1 = 1'} ORDER BY id {order} LIMIT ?", [*params, limit + 1])
    rows, next_cursor = split_page(rows, limit, lambda last: make_cursor(f"audit-{order}", last["id"]))
    return [public_entry(row) for row in rows], next_cursor


def parse_time_filter(text, name: str) -> str | None:
    """An optional RFC 3339 time from a query, normalized; `InvalidInput`."""
    if text is None:
        return None
    try:
        return normalize_time(text)
    except (ValueError, TypeError):
        raise InvalidInput(f"invalid_{name}", f"{name} must be an RFC 3339 time, e.g. 2026-11-21T14:03:07.123Z.") from None


@dataclass
class ChainReport:
    """What `verify_chain` found. `problem` is None when the log is whole."""

    entries: int = 0
    head_id: int | None = None
    head_sha256: str = GENESIS
    problem: str | None = None
    broken_entry_id: int | None = None
    recordings: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(archive: Archive) -> ChainReport:
    """Check the whole log, oldest first, streaming: every entry's hash over
    its fields, every `prev_sha256` link (ids must run 1, 2, 3 ... with no
    holes), every recording's own chain, and the recorded head. Stops at the
    first broken entry and names it; never raises for a broken log."""
    report = ChainReport()
    recording_heads: dict[str, str] = {}
    expected_id, previous = 1, GENESIS
    for row in _rows_in_order(archive):
        report.entries += 1
        if row["id"] != expected_id:
            return _broken(report, row["id"], f"entry {expected_id} is missing: ids jump from "
                                              f"{expected_id - 1} to {row['id']} (a row was deleted)")
        if row["prev_sha256"] != previous:
            return _broken(report, row["id"], f"entry {row['id']} does not link to entry {row['id'] - 1}: its "
                                              "prev_sha256 is not that entry's hash (an earlier row was deleted "
                                              "or rewritten)")
        if entry_digest(row) != row["sha256"]:
            return _broken(report, row["id"], f"entry {row['id']} was edited: its fields no longer hash to "
                                              "its sha256")
        recording_id = row["recording_id"]
        if recording_id is not None:
            # Entries from before recordings had chains of their own carry no
            # link, but the first linked entry links to the newest of them.
            if (row["recording_prev_sha256"] is not None
                    and row["recording_prev_sha256"] != recording_heads.get(recording_id, GENESIS)):
                return _broken(report, row["id"], f"entry {row['id']} does not link to the previous entry "
                                                  f"about recording {recording_id}")
            recording_heads[recording_id] = row["sha256"]
        expected_id, previous = row["id"] + 1, row["sha256"]
        report.head_id, report.head_sha256 = row["id"], row["sha256"]
    report.recordings = len(recording_heads)
    recorded = archive.database.one("SELECT value FROM meta WHERE key = ?", [_HEAD_KEY])
    if recorded is not None:
        head_id, _, head_sha = recorded["value"].partition(":")
        if int(head_id) != (report.head_id or 0) or head_sha != report.head_sha256:
            report.problem = (f"the log ends at entry {report.head_id or 0}, but entry {head_id} was written "
                              "(newest rows were deleted)")
            report.broken_entry_id = (report.head_id or 0) + 1
    elif report.entries:
        report.notes.append("no recorded head: the log predates head anchoring")
    return report


def _broken(report: ChainReport, entry_id: int, problem: str) -> ChainReport:
    report.problem, report.broken_entry_id = problem, entry_id
    return report


def _rows_in_order(archive: Archive, batch: int = 5000) -> Iterator[dict]:
    # Pages by id so memory stays flat however long the log.
    after = 0
    while True:
        rows = archive.database.query("SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?", [after, batch])
        if not rows:
            return
        yield from rows
        after = rows[-1]["id"]
