"""The append-only, hash-chained audit log.

Each entry's `sha256` covers its own fields and a link to the entry before
it in its chain, so editing or deleting any row breaks a link after it.
There are two kinds of chain:
- a recording's own: every entry about a recording links to the previous
  entry about the same recording (`recording_prev_sha256`, `GENESIS` for
  its first), so a recording's custody log can be checked on its own,
  without the rest of the log, which is what a copy bundle carries;
- the server-wide one: every entry about no recording (logins, accounts,
  codes, anchors) links to the previous such entry (`prev_sha256`).
Entries about a recording leave `prev_sha256` null (schema version 5 on;
entries written before link into the server-wide chain as well): uploads
to different recordings then touch no shared row but the next id, and a
recording's chain head lives in its own `audit_heads` row.

Deleting the *newest* rows of a chain leaves a shorter chain that is still
whole, so every append also writes its chain's head (the server-wide one
to `meta`, a recording's to `audit_heads`), and every
`anchor_seconds` the leader appends an `audit.anchored` entry to the
server-wide chain whose detail commits to the heads of every recording
whose chain grew since the anchor before (`heads_sha256`, below). A
recording's later entries cannot be dropped or rewritten without breaking
the server-wide chain at the next anchor. `verify_chain` checks all of it;
operators can record the server-wide head (`witness audit-verify` prints
it) to compare later. Ids still run 1, 2, 3 ... with no holes.

Entries are appended inside the caller's write transaction, which holds
the records' one writer lock (SQLite's write lock, or the PostgreSQL
adapter's advisory lock; sync/records/), so two processes, on one node or
several, can never take the same id or chain onto the same parent.
The entry's fields, its hash and its public shape are an evidence format
(`sync/evidence/custody.py`): copy bundles carry entries, and
`witness-verify` checks them without this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterator

from crypto.hashing import canonical_json
from ..archive import Archive
from ..errors import InvalidInput
from ..evidence.custody import ENTRY_FIELDS, GENESIS, entry_digest, public_entry
from ..records import Unit
from ..timefmt import normalize_time
from . import transparency
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
    `organisation_id` (None: the whole server). The entry is also appended
    to the transparency log in the same transaction (`transparency.py`);
    the answer carries its leaf's index and data as `log_index`, `log_leaf`."""
    last = db.one("SELECT id FROM audit ORDER BY id DESC LIMIT 1")
    entry_id = (last["id"] + 1) if last else 1
    prev = recording_prev = None
    if recording_id is not None:
        if organisation_id is None:
            owner = db.one("SELECT organisation_id FROM recordings WHERE id = ?", [recording_id])
            organisation_id = owner["organisation_id"] if owner is not None else None
        head = db.one("SELECT sha256 FROM audit_heads WHERE recording_id = ?", [recording_id])
        recording_prev = head["sha256"] if head else GENESIS
    else:
        prev = _server_head(db)[1]
    entry = {
        "id": entry_id,
        "at": at,
        "actor": actor,
        "action": action,
        "recording_id": recording_id,
        "organisation_id": organisation_id,
        "detail": canonical_json(detail or {}).decode("utf-8"),
        "prev_sha256": prev,
        "recording_prev_sha256": recording_prev,
    }
    entry["sha256"] = entry_digest(entry)
    db.execute(_INSERT, [entry[column] for column in ENTRY_FIELDS])
    log_index, leaf = transparency.append_leaf(db, entry_id, entry["sha256"])
    if recording_id is not None:
        db.upsert("audit_heads", {"recording_id": recording_id, "entry_id": entry_id, "sha256": entry["sha256"]},
                  key=["recording_id"])
    else:
        db.upsert("meta", {"key": _HEAD_KEY, "value": f"{entry_id}:{entry['sha256']}"}, key=["key"])
    return {**entry, "log_index": log_index, "log_leaf": leaf}


_INSERT = f"INSERT INTO audit ({', '.join(ENTRY_FIELDS)}) VALUES ({', '.join('?' for _ in ENTRY_FIELDS)})"
_ANCHOR_KEY = "audit_anchor"  # meta: the `through_id` of the newest anchor
ANCHOR_ACTION = "audit.anchored"


def _server_head(db: Unit) -> tuple[int, str]:
    """`(id, sha256)` of the server-wide chain's newest entry (`(0, GENESIS)`
    for an empty log). Kept in `meta` by every append; a log older than
    that is asked for its newest entry in the chain."""
    recorded = db.one("SELECT value FROM meta WHERE key = ?", [_HEAD_KEY])
    if recorded is not None:
        head_id, _, head_sha = recorded["value"].partition(":")
        return int(head_id), head_sha
    newest = db.one("SELECT id, sha256 FROM audit WHERE prev_sha256 IS NOT NULL ORDER BY id DESC LIMIT 1")
    return (newest["id"], newest["sha256"]) if newest else (0, GENESIS)


def heads_digest(heads: list[tuple[str, int, str]]) -> str:
    """What an anchor commits to: SHA-256 (hex) of the canonical JSON list of
    `[recording_id, entry_id, sha256]` heads, sorted by recording id."""
    return hashlib.sha256(canonical_json(sorted([list(head) for head in heads]))).hexdigest()


def anchor_heads(archive: Archive) -> dict | None:
    """Append an `audit.anchored` entry committing to the chain head of every
    recording whose chain grew since the last anchor (`through_id`: the
    newest entry covered; `recordings`: how many; `heads_sha256`:
    `heads_digest` of them), and return it; None when no recording's chain
    grew (nothing to anchor). Run by the leader every few seconds."""
    with archive.database.transaction() as db:
        previous = db.one("SELECT value FROM meta WHERE key = ?", [_ANCHOR_KEY])
        since = int(previous["value"]) if previous else 0
        heads = db.query("SELECT recording_id, entry_id, sha256 FROM audit_heads WHERE entry_id > ?", [since])
        if not heads:
            return None
        through = db.one("SELECT id FROM audit ORDER BY id DESC LIMIT 1")["id"]
        entry = append_entry(db, at=archive.now(), actor="system", action=ANCHOR_ACTION, detail={
            "through_id": through, "recordings": len(heads),
            "heads_sha256": heads_digest([(h["recording_id"], h["entry_id"], h["sha256"]) for h in heads])})
        db.upsert("meta", {"key": _ANCHOR_KEY, "value": str(through)}, key=["key"])
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
    """What `verify_chain` found. `problem` is None when the log is whole.
    `head_*` name the newest entry; `server_head_*` the server-wide chain's
    newest entry (what an operator writes down to compare later)."""

    entries: int = 0
    head_id: int | None = None
    head_sha256: str = GENESIS
    server_head_id: int = 0
    server_head_sha256: str = GENESIS
    anchors: int = 0
    log_leaves: int = 0  # the transparency log's, checked against the entries and its checkpoints
    log_checkpoint_size: int = 0
    problem: str | None = None
    broken_entry_id: int | None = None
    recordings: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(archive: Archive) -> ChainReport:
    """Check the whole log, oldest first, streaming: every entry's hash over
    its fields, ids running 1, 2, 3 ... with no holes, every `prev_sha256`
    link of the server-wide chain, every recording's own chain, every
    anchor against the heads it names, and the recorded heads (the
    server-wide one and every recording's). Stops at the first broken entry
    and names it; never raises for a broken log."""
    report = ChainReport()
    recording_heads: dict[str, tuple[int, str]] = {}
    grown: dict[str, tuple[int, str]] = {}  # recordings whose chain grew since the last anchor
    anchored_through = 0
    expected_id, server_previous = 1, GENESIS
    for row in _rows_in_order(archive):
        report.entries += 1
        entry_id, recording_id = row["id"], row["recording_id"]
        if entry_id != expected_id:
            return _broken(report, entry_id, f"entry {expected_id} is missing: ids jump from "
                                             f"{expected_id - 1} to {entry_id} (a row was deleted)")
        if entry_digest(row) != row["sha256"]:
            return _broken(report, entry_id, f"entry {entry_id} was edited: its fields no longer hash to its sha256")
        if row["prev_sha256"] is not None:
            if row["prev_sha256"] != server_previous:
                return _broken(report, entry_id, f"entry {entry_id} does not link to the entry before it in the "
                                                 "server-wide chain: its prev_sha256 is not that entry's hash (an "
                                                 "earlier row was deleted or rewritten)")
            server_previous = row["sha256"]
            report.server_head_id, report.server_head_sha256 = entry_id, row["sha256"]
        elif recording_id is None:
            return _broken(report, entry_id, f"entry {entry_id} is about no recording but links to no entry "
                                             "before it (prev_sha256 is null)")
        if recording_id is not None:
            # Entries from before recordings had chains of their own carry no
            # link, but the first linked entry links to the newest of them.
            if (row["recording_prev_sha256"] is not None
                    and row["recording_prev_sha256"] != recording_heads.get(recording_id, (0, GENESIS))[1]):
                return _broken(report, entry_id, f"entry {entry_id} does not link to the previous entry "
                                                 f"about recording {recording_id}")
            recording_heads[recording_id] = grown[recording_id] = (entry_id, row["sha256"])
        elif row["action"] == ANCHOR_ACTION:
            problem = _check_anchor(row, grown, anchored_through)
            if problem is not None:
                return _broken(report, entry_id, problem)
            anchored_through = json.loads(row["detail"])["through_id"]
            grown = {rid: head for rid, head in grown.items() if head[0] > anchored_through}
            report.anchors += 1
        expected_id = entry_id + 1
        report.head_id, report.head_sha256 = entry_id, row["sha256"]
    report.recordings = len(recording_heads)
    _check_recorded_heads(archive, report, recording_heads)
    if report.ok:
        keys = getattr(archive, "keys", None)  # a backup's records are checked without the keys
        verifier = transparency.log_signer(archive).verifier if keys is not None else None
        origin = transparency.log_origin(archive) if keys is not None else None
        problem, report.log_leaves, report.log_checkpoint_size = transparency.check_log(
            archive.database, verifier, origin)
        if problem is not None:
            report.problem, report.broken_entry_id = f"transparency log: {problem}", report.head_id
    return report


def _check_anchor(row: dict, grown: dict[str, tuple[int, str]], anchored_through: int) -> str | None:
    try:
        detail = json.loads(row["detail"])
        through, digest = int(detail["through_id"]), detail["heads_sha256"]
    except (KeyError, TypeError, ValueError):
        return f"anchor entry {row['id']} does not say what it anchors"
    heads = [(rid, head_id, sha) for rid, (head_id, sha) in grown.items() if anchored_through < head_id <= through]
    if through >= row["id"] or heads_digest(heads) != digest:
        return (f"anchor entry {row['id']} does not match the recordings' chain heads up to entry {through}: "
                "an entry about a recording before it was deleted, added or rewritten")
    return None


def _check_recorded_heads(archive: Archive, report: ChainReport, recording_heads: dict[str, tuple[int, str]]) -> None:
    recorded = archive.database.one("SELECT value FROM meta WHERE key = ?", [_HEAD_KEY])
    if recorded is not None:
        head_id, _, head_sha = recorded["value"].partition(":")
        if int(head_id) != report.server_head_id or head_sha != report.server_head_sha256:
            report.problem = (f"the server-wide chain ends at entry {report.server_head_id}, but entry {head_id} "
                              "was written (newest rows were deleted)")
            report.broken_entry_id = report.server_head_id + 1
            return
    elif report.entries:
        report.notes.append("no recorded head: the log predates head anchoring")
    seen = set()
    for row in archive.database.query("SELECT recording_id, entry_id, sha256 FROM audit_heads ORDER BY recording_id"):
        seen.add(row["recording_id"])
        held = recording_heads.get(row["recording_id"], (0, GENESIS))
        if (row["entry_id"], row["sha256"]) != held:
            report.problem = (f"recording {row['recording_id']}'s chain ends at entry {held[0]}, but entry "
                              f"{row['entry_id']} was written (newest rows were deleted)")
            report.broken_entry_id = held[0] + 1
            return
    missing = sorted(set(recording_heads) - seen)
    if missing:
        report.problem = f"recording {missing[0]}'s chain has entries but no recorded head (its head row was deleted)"
        report.broken_entry_id = recording_heads[missing[0]][0]


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
