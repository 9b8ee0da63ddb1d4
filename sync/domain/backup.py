"""Backing up and restoring an embedded archive (SQLite records, chunks in
files or on S3), online, verified as it goes (issue 12, item 8).

A backup folder:

    BACKUP.json                 the index, written last (its absence means
                                "not a finished backup")
    witness.sqlite3             the records: one consistent state, taken with
                                SQLite's online backup API while serving
    chunks/<recording>/<name>   every chunk those records name, exactly as
                                stored (still encrypted), in the file layout

`backup` takes the records snapshot first, then copies each chunk the
snapshot's rows name from the live store (files or S3), checking its
SHA-256 against the row's `ciphertext_sha256` before writing it (chunks
arriving meanwhile belong to the next backup: the snapshot does not name
them). The snapshot's audit chains are checked as `audit-verify` checks them.
Any mismatch stops it (`Mismatch`) before `BACKUP.json` is written.

Left out on purpose: the keys (kept and backed up apart; a backup without
them cannot decrypt anything, which is the point) and copy bundles (they
hold decrypted footage and can be rebuilt: a restored `ready` request's
download answers 409 `bundle_not_ready`, "ask for a new copy", and a new
request builds a new bundle from the same chunks and manifests).

`restore` checks everything in the backup (index, records hash, audit
chains, every chunk's hash) before it puts anything into the data folder,
then puts the chunks into the configured chunk store (files, or S3 with
`WITNESS_CHUNK_STORE`), then the records last, so a records file is never
there without its chunks.

`move_archive` puts a backup folder into PostgreSQL records and the
configured chunk store (S3) instead: the same checks first, the chunks
checked again as they go in, then every row in one transaction that
commits only once the counts and the audit chains check out inside
PostgreSQL (the identity columns then continue after the ids copied).

`BACKUP.json` carries its own SHA-256 (`index_sha256`): it detects damage
and careless edits, not forgery (whoever can rewrite the backup can rehash
it). What proves the footage's history is inside: the signed manifests and
the hash-chained audit log, whose head the index records and both commands
print.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from crypto.hashing import canonical_json

from ..archive import Archive
from ..durable import fsync_path
from ..errors import WitnessError
from ..records import RECORDS_FILE
from ..records.migrations import latest_version
from ..records.sqlite_backup import ReadOnlyRecords, is_records_file, restore_into, snapshot_into
from ..storage import BLOCK_BYTES, ChunkListing, read_blocks
from ..storage.files import FileBlobStore, FileChunkStore
from . import audit
from .ingest import chunk_file_name

FORMAT = "witness-sync-backup"
FORMAT_VERSION = 1
INDEX_FILE = "BACKUP.json"
CHUNKS_FOLDER = "chunks"

# Tables whose rows make a data folder "hold records" (a fresh folder has
# only the default organisation, the schema version and empty tables).
_RECORD_TABLES = ("recordings", "chunks", "manifests", "devices", "staff", "enrollment_codes", "copy_requests",
                  "audit")
_COUNTED = ("organisations", "staff", "devices", "recordings", "chunks", "manifests", "copy_requests", "audit")

Say = Callable[[str], None]


class UsageProblem(WitnessError):
    """The command cannot run as asked (a non-empty target, a data folder
    holding records, a server running on it, other keys): nothing was done."""


class Mismatch(WitnessError):
    """Something did not verify (a chunk's hash, the records file, an audit
    entry); the message names it. Backup: no BACKUP.json was written.
    Restore: nothing was put into the data folder."""


@dataclass
class Summary:
    """What a backup or restore did."""

    folder: Path
    counts: dict = field(default_factory=dict)
    chunk_bytes: int = 0
    audit_head: dict = field(default_factory=dict)
    records_sha256: str = ""
    seconds: float = 0.0


# -- backup


def backup(archive: Archive, target: Path, say: Say = lambda line: None) -> Summary:
    """Back the archive up into `target` (absent or an empty folder) while
    it serves. Raises `UsageProblem`, `Mismatch`, `StoreUnavailable`."""
    began = time.monotonic()
    _require_sqlite(archive, "backup")
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageProblem(f"{target} is not an empty folder: give a new or empty folder for the backup.")
    if target.resolve().is_relative_to(archive.settings.data_dir.resolve()):
        raise UsageProblem(f"{target} is inside the data folder {archive.settings.data_dir}: a backup belongs "
                           "on another disk (and files there would be taken for the server's own).")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    fsync_path(target.parent, directory=True)

    say(f"records: taking a consistent snapshot of {_live_records(archive)}")
    records_path = target / RECORDS_FILE
    snapshot_into(_live_records(archive), records_path)
    copy = ReadOnlyRecords(records_path)
    try:
        summary = Summary(target, counts=_counts(copy))
        say("records: " + ", ".join(f"{n} {t}" for t, n in summary.counts.items()))
        summary.audit_head = _check_chains(copy, say)

        store = FileChunkStore(target / CHUNKS_FOLDER)
        progress = _Progress(say, summary.counts["chunks"])
        for row in _chunk_rows(copy):
            data = _read_verified(row, lambda rid, name: archive.chunks.open(rid, name), "the live chunk store")
            store.put(row["recording_id"], chunk_file_name(row["idx"], row["ciphertext_sha256"]), data)
            summary.chunk_bytes += len(data)
            progress.step(summary.chunk_bytes)
        progress.done(summary.chunk_bytes)
        schema_version = copy.schema_version()
    finally:
        copy.close()

    summary.records_sha256, records_size = _file_sha256(records_path)
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": archive.now(),
        "schema_version": schema_version,
        "records": {"file": RECORDS_FILE, "size": records_size, "sha256": summary.records_sha256},
        "chunks": {"folder": CHUNKS_FOLDER, "count": summary.counts["chunks"], "bytes": summary.chunk_bytes},
        "counts": summary.counts,
        "audit_head": summary.audit_head,
        # Ids only: the keys themselves are never in a backup.
        "keys": {"hpke_key_id": archive.keys.hpke_key_id, "signing_key_id": archive.keys.signing_key_id},
        "not_included": ["keys (back them up apart)", "copy bundles (rebuilt on a new request)"],
    }
    index["index_sha256"] = _index_digest(index)
    FileBlobStore(target).put(INDEX_FILE, [json.dumps(index, indent=2, sort_keys=True).encode() + b"\n"])
    say(f"index: {target / INDEX_FILE} written")
    summary.seconds = time.monotonic() - began
    return summary


# -- verify and restore


@dataclass
class Verified:
    """A backup folder that checked out: its index and what it holds."""

    folder: Path
    index: dict
    summary: Summary


def verify_backup(source: Path, say: Say = lambda line: None) -> Verified:
    """Check a backup folder without changing anything: the index and its
    hash, the records file's hash, its audit chains and counts, every
    chunk's hash and size. Raises `UsageProblem` (not a folder) or
    `Mismatch` naming what failed."""
    began = time.monotonic()
    source = Path(source)
    if not source.is_dir():
        raise UsageProblem(f"{source} is not a folder.")
    index_path = source / INDEX_FILE
    if not index_path.is_file():
        raise Mismatch(f"{index_path} is missing: this is not a finished backup (a backup that stopped "
                       "on a mismatch leaves none).")
    try:
        index = json.loads(index_path.read_bytes())
    except ValueError as exc:
        raise Mismatch(f"{index_path} is not valid JSON ({exc}).") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise Mismatch(f"{index_path} is not a Witness Sync backup index.")
    if index.get("format_version") != FORMAT_VERSION:
        raise Mismatch(f"{index_path} is format version {index.get('format_version')}; this release reads "
                       f"version {FORMAT_VERSION}.")
    if index.get("index_sha256") != _index_digest(index):
        raise Mismatch(f"{index_path} was changed: its fields no longer hash to its index_sha256.")
    say(f"index: {index_path} intact (backup of {index['created_at']}, schema version {index['schema_version']})")

    records_path = source / index["records"]["file"]
    if not records_path.is_file():
        raise Mismatch(f"records file {records_path} is missing.")
    digest, size = _file_sha256(records_path)
    if (digest, size) != (index["records"]["sha256"], index["records"]["size"]):
        raise Mismatch(f"records file {records_path} was changed: its SHA-256 is {digest} ({size} bytes), "
                       f"the index says {index['records']['sha256']} ({index['records']['size']} bytes).")
    if not is_records_file(records_path):
        raise Mismatch(f"records file {records_path} is not a Witness Sync records file.")
    say(f"records: {records_path.name} matches the index (sha256 {digest})")
    latest = latest_version("sqlite")
    if index["schema_version"] > latest:
        raise Mismatch(f"the backup's records are at schema version {index['schema_version']}, made by a newer "
                       f"Witness Sync; this release knows versions up to {latest}. Restore with that release.")

    copy = ReadOnlyRecords(records_path)
    try:
        if copy.schema_version() != index["schema_version"]:
            raise Mismatch(f"records file {records_path} is at schema version {copy.schema_version()}, the "
                           f"index says {index['schema_version']}.")
        summary = Summary(source, counts=_counts(copy))
        if summary.counts != index["counts"]:
            raise Mismatch(f"records file {records_path} holds {summary.counts}, the index says {index['counts']}.")
        summary.audit_head = _check_chains(copy, say)
        if summary.audit_head != index["audit_head"]:
            raise Mismatch(f"the records' audit log ends at {summary.audit_head}, the index says "
                           f"{index['audit_head']}.")
        chunks_root = source / CHUNKS_FOLDER
        if summary.counts["chunks"] and not chunks_root.is_dir():
            raise Mismatch(f"{chunks_root} is missing.")
        store = FileChunkStore(chunks_root) if chunks_root.is_dir() else None
        progress = _Progress(say, summary.counts["chunks"], verb="checked")
        for row in _chunk_rows(copy):
            data = _read_verified(row, store.open, f"the backup ({chunks_root})")
            summary.chunk_bytes += len(data)
            progress.step(summary.chunk_bytes)
        progress.done(summary.chunk_bytes)
        summary.records_sha256 = digest
    finally:
        copy.close()
    summary.seconds = time.monotonic() - began
    return Verified(source, index, summary)


def restore(archive: Archive, source: Path, say: Say = lambda line: None) -> Summary:
    """Restore a backup folder into the archive's data folder (which must
    hold no records, with no server running on it) and its configured chunk
    store. Everything is checked first; on a mismatch nothing is put in
    place. Raises `UsageProblem`, `Mismatch`, `StoreUnavailable`."""
    began = time.monotonic()
    _require_sqlite(archive, "restore")
    data_dir = archive.settings.data_dir
    verified, put = _prepare(archive, source, say, where=f"{data_dir}", fix="set WITNESS_DATA_DIR to an empty one")
    records_path = verified.folder / verified.index["records"]["file"]
    if _file_sha256(records_path)[0] != verified.index["records"]["sha256"]:
        _remove_chunks(archive, put)
        raise Mismatch(f"records file {records_path} changed while it was being restored; nothing was kept.")
    say(f"records: putting {records_path.name} in place in {data_dir}")
    restore_into(records_path, _live_records(archive))
    report = audit.verify_chain(archive)
    if not report.ok:
        raise Mismatch(f"the restored records' audit log is broken at entry {report.broken_entry_id}: "
                       f"{report.problem} (the backup changed while it was restored?). Remove {data_dir} "
                       "and restore again.")
    verified.summary.seconds = time.monotonic() - began
    return verified.summary


# Tables in an order that satisfies every foreign key, for `move_archive`.
_TABLE_ORDER = ("organisations", "devices", "staff", "enrollment_codes", "recordings", "chunks", "manifests",
                "audit", "audit_heads", "copy_requests", "ended_sessions", "login_failures", "chunk_removals",
                "tlog_leaves", "tlog_hashes", "tlog_checkpoints", "tlog_witness_state", "tlog_cosignatures",
                "meta")


def move_archive(archive: Archive, source: Path, say: Say = lambda line: None) -> Summary:
    """Move an embedded archive, as a backup folder `backup` made, into the
    configured PostgreSQL records (which must hold no records, no server
    running on them) and chunk store (S3 with `WITNESS_CHUNK_STORE`).
    Everything is checked first; the chunks go in checked again; the rows
    go in in one transaction that commits only when the audit chains and
    counts check out in PostgreSQL itself, else nothing is kept. Raises
    `UsageProblem`, `Mismatch`, `StoreUnavailable`, `Busy`."""
    from ..records.postgres_load import advance_identities

    began = time.monotonic()
    backend = getattr(archive.database, "backend", "sqlite")
    if backend != "postgresql":
        raise UsageProblem("`move-archive` copies into PostgreSQL records: set WITNESS_DATABASE_URL (and "
                           "WITNESS_CHUNK_STORE for S3); to restore into SQLite, use `restore`.")
    verified, put = _prepare(archive, source, say, where="the PostgreSQL database",
                             fix="point WITNESS_DATABASE_URL at a new, empty database")
    copy = ReadOnlyRecords(verified.folder / verified.index["records"]["file"])
    try:
        target_version = archive.database.schema_version()
        if copy.schema_version() != target_version:
            raise Mismatch(f"the backup's records are at schema version {copy.schema_version()}, the PostgreSQL "
                           f"records at {target_version}: restore the backup with `restore` into this release "
                           "first (its start migrates it), back it up again, then move that.")
        tables = {row["name"] for row in copy.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        unknown = tables - set(_TABLE_ORDER)
        if unknown:
            raise Mismatch(f"the backup's records hold tables this release does not move: {sorted(unknown)}.")
        with archive.database.transaction() as unit:
            # A new database holds the default organisation and its schema
            # version; the backup's own rows replace them.
            unit.execute("DELETE FROM organisations")
            unit.execute("DELETE FROM meta")
            for table in _TABLE_ORDER:
                if table not in tables:
                    continue
                moved = 0
                for row in copy.iterate(f"SELECT * FROM {table}"):
                    unit.insert(table, row)
                    moved += 1
                say(f"records: {table}: {moved} rows")
            advance_identities(unit)
            # Checked inside the transaction, in PostgreSQL: commit only if whole.
            moved_counts = _counts(unit)
            if moved_counts != verified.index["counts"]:
                raise Mismatch(f"PostgreSQL holds {moved_counts} after the move, the backup "
                               f"{verified.index['counts']}.")
            report = audit.verify_chain(SimpleNamespace(database=unit))
            head = {"id": report.head_id or 0, "sha256": report.head_sha256}
            if not report.ok:
                raise Mismatch(f"audit entry {report.broken_entry_id} in PostgreSQL: {report.problem}")
            if head != verified.index["audit_head"]:
                raise Mismatch(f"PostgreSQL's audit log ends at {head}, the backup's at "
                               f"{verified.index['audit_head']}.")
            say(f"audit: log intact in PostgreSQL, {report.entries} entries, head entry {head['id']} "
                f"sha256 {head['sha256']}")
    except BaseException:
        copy.close()
        _remove_chunks(archive, put)
        raise
    copy.close()
    verified.summary.seconds = time.monotonic() - began
    return verified.summary


def _prepare(archive: Archive, source: Path, say: Say, *, where: str, fix: str) -> tuple[Verified, list]:
    """What restore and move share: refuse a target holding records or
    chunks or served by a running server, verify the backup, check the
    keys, then put every chunk into the configured store (checked again as
    it is copied; removed again if a later one fails). Returns the verified
    backup and the chunks put, for the caller to remove should it fail."""
    if archive.leader_lock().someone_leads():
        raise UsageProblem(f"a server is running on {where} (it holds the scheduler lock): stop it first.")
    held = {table: _count(archive.database, table) for table in _RECORD_TABLES}
    extra_organisations = _count(archive.database, "organisations") - 1
    if any(held.values()) or extra_organisations > 0:
        shown = ", ".join(f"{n} {t}" for t, n in held.items() if n)
        raise UsageProblem(f"{where} already holds records ({shown or 'organisations'}): restore only into "
                           f"new, empty records ({fix}).")
    if isinstance(archive.chunks, ChunkListing) and next(iter(archive.chunks.recording_ids()), None) is not None:
        raise UsageProblem("the configured chunk store already holds chunks: restore into an empty one.")

    verified = verify_backup(source, say)
    keys = verified.index.get("keys", {})
    if keys.get("hpke_key_id") not in (None, archive.keys.hpke_key_id):
        raise UsageProblem(
            f"the configured keys ({archive.settings.keys_dir}: {archive.keys.hpke_key_id}) are not the backed-up "
            f"server's ({keys['hpke_key_id']}): its footage could not be decrypted. Point WITNESS_KEYS_DIR at the "
            "keys folder backed up apart (remove the one just made), then try again.")
    if keys.get("signing_key_id") not in (None, archive.keys.signing_key_id):
        raise UsageProblem(f"the configured signing key ({archive.keys.signing_key_id}) is not the backed-up "
                           f"server's ({keys['signing_key_id']}): point WITNESS_KEYS_DIR at its keys folder.")
    say("backup verified: putting chunks in place")

    summary = verified.summary
    copy = ReadOnlyRecords(verified.folder / verified.index["records"]["file"])
    put: list[tuple[str, str]] = []
    try:
        backup_store = FileChunkStore(verified.folder / CHUNKS_FOLDER) if summary.counts["chunks"] else None
        progress = _Progress(say, summary.counts["chunks"], verb="put in place")
        done_bytes = 0
        for row in _chunk_rows(copy):
            # Checked again as it is copied: only bytes that match go in.
            data = _read_verified(row, backup_store.open, f"the backup ({verified.folder / CHUNKS_FOLDER})")
            name = chunk_file_name(row["idx"], row["ciphertext_sha256"])
            archive.chunks.put(row["recording_id"], name, data)
            put.append((row["recording_id"], name))
            done_bytes += len(data)
            progress.step(done_bytes)
        progress.done(done_bytes)
    except BaseException:
        _remove_chunks(archive, put)
        raise
    finally:
        copy.close()
    return verified, put


# -- shared


def _require_sqlite(archive: Archive, command: str) -> None:
    backend = getattr(archive.database, "backend", "sqlite")
    if backend != "sqlite":
        raise UsageProblem(f"`{command}` is for the embedded SQLite records; these records are on {backend}: "
                           "use its own backups (docs/operations.md, Backups).")


def _live_records(archive: Archive) -> Path:
    return Path(getattr(archive.database, "path", archive.settings.data_dir / RECORDS_FILE))


def _count(records, table: str) -> int:
    return int(records.one(f"SELECT COUNT(*) AS n FROM {table}")["n"])


def _counts(records) -> dict:
    return {table: _count(records, table) for table in _COUNTED}


def _check_chains(copy: ReadOnlyRecords, say: Say) -> dict:
    """The same checks as `audit-verify`, on a records copy; the head."""
    report = audit.verify_chain(SimpleNamespace(database=copy))
    if not report.ok:
        raise Mismatch(f"audit entry {report.broken_entry_id}: {report.problem}")
    say(f"audit: log intact, {report.entries} entries, {report.recordings} recordings' custody chains, "
        f"head entry {report.head_id or 0} sha256 {report.head_sha256}")
    return {"id": report.head_id or 0, "sha256": report.head_sha256}


def _chunk_rows(copy: ReadOnlyRecords):
    return copy.iterate("SELECT recording_id, idx, ciphertext_sha256, ciphertext_size FROM chunks "
                        "ORDER BY recording_id, idx")


def _read_verified(row: dict, opener, where: str) -> bytes:
    """A chunk's bytes (one chunk in memory at a time: at most the largest
    chunk accepted), checked against its row. Raises `Mismatch`."""
    label = f"recording {row['recording_id']} chunk {row['idx']}"
    name = chunk_file_name(row["idx"], row["ciphertext_sha256"])
    try:
        blocks = list(read_blocks(opener(row["recording_id"], name), BLOCK_BYTES))
    except FileNotFoundError:
        raise Mismatch(f"{label} ({name}) is missing from {where}.") from None
    data = b"".join(blocks)
    digest = hashlib.sha256(data).hexdigest()
    if digest != row["ciphertext_sha256"] or len(data) != row["ciphertext_size"]:
        raise Mismatch(f"{label} ({name}) in {where} is damaged: its {len(data)} bytes hash to {digest}, the "
                       f"records say {row['ciphertext_size']} bytes hashing to {row['ciphertext_sha256']}.")
    return data


def _remove_chunks(archive: Archive, put: list[tuple[str, str]]) -> None:
    for recording_id, name in put:
        try:
            archive.chunks.delete(recording_id, name)
        except Exception:  # noqa: BLE001 - best effort; reconciliation removes unheld chunks too
            pass
    root = getattr(archive.chunks, "root", None)
    if root is not None:
        for recording_id in {rid for rid, _ in put}:
            try:
                (Path(root) / recording_id).rmdir()
            except OSError:
                pass


def _index_digest(index: dict) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in index.items() if k != "index_sha256"})).hexdigest()


def _file_sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for block in read_blocks(open(path, "rb")):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size



class _Progress:
    """A line every few seconds, and one at the end."""

    def __init__(self, say: Say, total: int, *, verb: str = "copied", every: float = 2.0):
        self.say, self.total, self.verb, self.every = say, total, verb, every
        self.count, self.last = 0, time.monotonic()

    def step(self, size: int) -> None:
        self.count += 1
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.say(f"chunks: {self.count}/{self.total} {self.verb} and verified ({size} bytes)")

    def done(self, size: int) -> None:
        self.say(f"chunks: {self.count}/{self.total} {self.verb}, every SHA-256 matches its record ({size} bytes)")
