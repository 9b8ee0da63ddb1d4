"""The transparency log: every audit entry (every chunk receipt and every
custody event) as a leaf of an append-only RFC 9162 Merkle log, with signed,
time-stamped checkpoints (docs/transparency.md; issue 14).

- `append_leaf` runs inside the audit entry's own write transaction
  (`audit.append_entry` calls it), so an entry and its leaf are durable
  together or not at all, and a receipt's leaf index is known when it is
  acknowledged. The leaf is a salted commitment to the entry's hash
  (`sync/evidence/custody.py` `log_leaf`): the log reveals nothing of the
  footage or the people; the salts stay in the records, and a copy bundle
  opens those of its own recording's entries.
- The tree is kept as the hash of every complete subtree (`tlog_hashes`,
  keyed by Go sumdb/tlog's stored hash index), so appending costs one read
  of at most log2(n) hashes and under two writes on average, and tiles,
  roots and proofs never need the whole tree (`crypto/tlog/merkle.py`).
- `make_checkpoint`, run by the background-jobs leader every
  `log_checkpoint_seconds` whether or not anything arrived (a fixed cadence,
  so the timing of checkpoints says nothing about activity), signs the
  current tree head as a C2SP tlog-checkpoint (a signed note, the log's own
  Ed25519 key) and has it RFC 3161 time-stamped by the built-in TSA. The
  newest signed note is what `GET /log/checkpoint` serves; the first
  checkpoint of every tree size is kept with its token (`tlog_checkpoints`).
- `tile` and `entry_bundle` serve the log read-only in the C2SP tlog-tiles
  layout (`server/log.py`), so existing transparency tooling can read and
  mirror it.

Entries written before schema version 6 are not in the log (they stay
covered by the hash chains, `audit.py`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass

import requests

from crypto import InvalidEvidence
from crypto.tlog.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from crypto.tlog.cosignature import CosignatureVerifier
from crypto.tlog.merkle import HashReader, leaf_hash, prove_consistency, prove_inclusion, stored_hash_index, \
    stored_hashes_for_leaf, tree_hash
from crypto.tlog.note import Ed25519Signer, Ed25519Verifier
from crypto.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, entry_bundle as pack_entries, tile_bytes
from crypto.tlog.witness import SIZE_CONTENT_TYPE, AddCheckpoint, parse_conflict_body, parse_cosignatures_body
from crypto.tsa import time_stamp

from ..archive import Archive
from ..errors import NotFound
from ..evidence.custody import LOG_SALT_BYTES, log_leaf
from ..evidence.receipt import signed_receipt
from ..records import Unit
from .tsa_client import RetryPause, ask_external_tsas

_NOTE_KEY = "tlog_checkpoint"  # meta: the newest signed checkpoint note
log = logging.getLogger("witness.transparency")


def log_origin(archive: Archive) -> str:
    """The log's origin line (its name in checkpoints and its key's name):
    `WITNESS_LOG_ORIGIN`, else `witness-sync/log-<16 hex digits of the log
    key's SHA-256>`, stable for as long as the keys folder is kept."""
    if archive.settings.log_origin:
        return archive.settings.log_origin
    raw = archive.keys.log_private.public_key().public_bytes_raw()
    return f"witness-sync/log-{hashlib.sha256(raw).hexdigest()[:16]}"


def log_signer(archive: Archive) -> Ed25519Signer:
    return Ed25519Signer(log_origin(archive), archive.keys.log_private)


def append_leaf(db: Unit, audit_id: int, entry_sha256: str) -> tuple[int, bytes]:
    """Inside the caller's write transaction (the audit entry's): append the
    leaf committing to entry `audit_id`; return its index and data."""
    last = db.one("SELECT idx FROM tlog_leaves ORDER BY idx DESC LIMIT 1")
    index = last["idx"] + 1 if last else 0
    salt = secrets.token_bytes(LOG_SALT_BYTES)
    data = log_leaf(salt, entry_sha256)
    for stored in stored_hashes_for_leaf(index, leaf_hash(data), hash_reader(db)):
        db.execute("INSERT INTO tlog_hashes (position, hash) VALUES (?, ?)",
                   [stored_hash_index(stored.level, stored.index), stored.hash])
    db.execute("INSERT INTO tlog_leaves (idx, audit_id, salt, data) VALUES (?, ?, ?, ?)",
               [index, audit_id, salt, data])
    return index, data


def hash_reader(db) -> HashReader:
    """The stored hashes of the log's tree, read in one query per call."""
    def read(coordinates) -> list[bytes]:
        positions = [stored_hash_index(level, index) for level, index in coordinates]
        if not positions:
            return []
        rows = db.query(f"SELECT position, hash FROM tlog_hashes WHERE position IN "
                        f"({', '.join('?' for _ in positions)})", positions)
        found = {row["position"]: bytes(row["hash"]) for row in rows}
        missing = [p for p in positions if p not in found]
        if missing:
            raise ValueError(f"the log's stored hash {missing[0]} is missing from the records")
        return [found[p] for p in positions]
    return read


def log_size(db) -> int:
    last = db.one("SELECT idx FROM tlog_leaves ORDER BY idx DESC LIMIT 1")
    return last["idx"] + 1 if last else 0


@dataclass(frozen=True)
class SignedHead:
    """A checkpoint as made: the tree size, its root, the signed note and
    the built-in TSA's token over the SHA-256 of the note."""

    size: int
    root_hash: bytes
    note: str
    tsr: bytes


def make_checkpoint(archive: Archive) -> SignedHead:
    """Sign and time-stamp the log's current tree head, make it the one
    served, and keep it if the log reached a new size. Run on a fixed
    cadence by the leader."""
    with archive.database.snapshot() as db:
        size = log_size(db)
        root = tree_hash(size, hash_reader(db))
    note = sign_checkpoint(Checkpoint(log_origin(archive), size, root), log_signer(archive))
    token = time_stamp(archive.keys.tsa, hashlib.sha256(note.encode("utf-8")).digest(), at=archive.clock())
    with archive.database.transaction() as db:
        db.upsert("meta", {"key": _NOTE_KEY, "value": note}, key=["key"])
        if db.one("SELECT 1 AS held FROM tlog_checkpoints WHERE size = ?", [size]) is None:
            db.insert("tlog_checkpoints", {"size": size, "note": note, "tsr": token, "created_at": archive.now()})
    return SignedHead(size, root, note, token)


def latest_checkpoint(archive: Archive) -> str:
    """The newest signed checkpoint note, with the cosignature lines the
    witnesses gave for its tree (a cosignature covers the checkpoint's text,
    which is the same for every note of one size). `NotFound` before the
    first one."""
    note = _latest_note(archive)
    size = parse_checkpoint(note[:note.index("\n\n") + 1]).size
    lines = archive.database.query("SELECT line FROM tlog_cosignatures WHERE size = ? ORDER BY witness", [size])
    return note + "".join(row["line"] for row in lines)


def _latest_note(archive: Archive) -> str:
    row = archive.database.one("SELECT value FROM meta WHERE key = ?", [_NOTE_KEY])
    if row is None:
        raise NotFound("The log has no checkpoint yet; the server signs one within seconds of starting.")
    return row["value"]


@dataclass(frozen=True)
class LogWitness:
    """A witness the log sends its checkpoints to (`WITNESS_LOG_WITNESSES`)."""

    url: str
    verifier: CosignatureVerifier


def configured_witnesses(archive: Archive) -> list[LogWitness]:
    """The configured witnesses. Raises `ValueError` for a vkey that is not
    a cosignature/v1 key."""
    witnesses = []
    for url, vkey in archive.settings.log_witnesses:
        try:
            witnesses.append(LogWitness(url, CosignatureVerifier.from_vkey(vkey)))
        except InvalidEvidence:
            raise ValueError(f"WITNESS_LOG_WITNESSES: {vkey!r} is not a witness's cosignature/v1 key") from None
    return witnesses


WITNESS_TIMEOUT_SECONDS = 5.0


def send_to_witnesses(archive: Archive, post=None) -> list[str]:
    """Send the newest checkpoint to every configured witness that has not
    cosigned its size yet (C2SP tlog-witness `add-checkpoint`, with the
    consistency proof from the size the witness last cosigned), keep each
    cosignature that verifies, and return the names of the witnesses that
    cosigned now. A witness that says it holds another size (409) is
    believed for the next round, which proves from there; one that is down
    or answers otherwise is tried again next round. Never raises for a
    witness's failure."""
    post = post or requests.post
    witnesses = configured_witnesses(archive)
    if not witnesses:
        return []
    note = _latest_note(archive)
    text = note[:note.index("\n\n") + 1]
    size = parse_checkpoint(text).size
    cosigned = []
    for witness in witnesses:
        name = witness.verifier.vkey
        held = archive.database.one("SELECT size FROM tlog_witness_state WHERE witness = ?", [name])
        old = held["size"] if held else 0
        if archive.database.one("SELECT 1 AS held FROM tlog_cosignatures WHERE size = ? AND witness = ?",
                                [size, name]) is not None or size == 0:
            continue
        if old > size:
            log.error("witness %s holds size %d, larger than this log's %d: was the log's database rolled back?",
                      witness.url, old, size)
            continue
        proof = consistency_proof(archive, old, size) if 0 < old < size else []
        body = AddCheckpoint(old, tuple(proof), note).body()
        try:
            answer = post(witness.url + "/add-checkpoint", data=body, timeout=WITNESS_TIMEOUT_SECONDS,
                          headers={"Content-Type": "text/plain; charset=utf-8"})
        except requests.RequestException as exc:
            log.warning("witness %s is unreachable (tried again next round): %s", witness.url, exc)
            continue
        if answer.status_code == 409 and answer.headers.get("Content-Type", "").startswith(SIZE_CONTENT_TYPE):
            try:
                _note_witness_size(archive, name, parse_conflict_body(answer.content))
            except InvalidEvidence:
                log.warning("witness %s answered 409 without a size", witness.url)
            continue
        if answer.status_code != 200:
            log.warning("witness %s refused checkpoint %d: %d %s", witness.url, size, answer.status_code,
                        answer.text[:200].strip())
            continue
        try:
            lines = [sig for sig in parse_cosignatures_body(answer.content)
                     if sig.name == witness.verifier.name and sig.key_id == witness.verifier.key_id
                     and witness.verifier.verify(text.encode("utf-8"), sig.signature)]
        except InvalidEvidence:
            lines = []
        if not lines:
            log.error("witness %s answered 200 without a cosignature that verifies with its key", witness.url)
            continue
        with archive.database.transaction() as db:
            db.upsert("tlog_cosignatures", {"size": size, "witness": name, "line": lines[0].line(),
                                            "received_at": archive.now()}, key=["size", "witness"])
            db.upsert("tlog_witness_state", {"witness": name, "size": size, "updated_at": archive.now()},
                      key=["witness"])
        cosigned.append(witness.verifier.name)
    return cosigned


def _note_witness_size(archive: Archive, name: str, size: int) -> None:
    with archive.database.transaction() as db:
        db.upsert("tlog_witness_state", {"witness": name, "size": size, "updated_at": archive.now()}, key=["witness"])


def cosignatures_at(archive: Archive, size: int) -> list[str]:
    """The cosignature lines kept for the checkpoint of tree size `size`."""
    return [row["line"] for row in archive.database.query(
        "SELECT line FROM tlog_cosignatures WHERE size = ? ORDER BY witness", [size])]


def checkpoint_at(archive: Archive, size: int) -> tuple[str, bytes]:
    """`(note, token)` of the first checkpoint of tree size `size`. `NotFound`."""
    row = archive.database.one("SELECT note, tsr FROM tlog_checkpoints WHERE size = ?", [size])
    if row is None:
        raise NotFound(f"The log kept no checkpoint of size {size}.")
    return row["note"], bytes(row["tsr"])


def checkpoint_stamps(archive: Archive, size: int) -> dict:
    """The kept checkpoint of tree size `size` with its time-stamps: the
    built-in TSA's token, and the external TSA's (and which TSA, and when it
    was kept) or None while there is none, so a reader sees which time rests
    on the operator's own key alone. `NotFound`."""
    row = archive.database.one("SELECT * FROM tlog_checkpoints WHERE size = ?", [size])
    if row is None:
        raise NotFound(f"The log kept no checkpoint of size {size}.")
    external = None
    if row["external_tsr"] is not None:
        external = {"tsa_url": row["external_tsa_url"], "tsr": bytes(row["external_tsr"]),
                    "kept_at": row["external_stamped_at"]}
    return {"size": row["size"], "note": row["note"], "created_at": row["created_at"],
            "builtin_tsr": bytes(row["tsr"]), "external": external}


def stamp_checkpoint_externally(archive: Archive) -> int | None:
    """Have the newest kept checkpoint time-stamped by the external TSAs
    (`WITNESS_TSA_URL`, the first that answers), verified against
    `WITNESS_TSA_CA_FILE` before it is kept; return its size, or None when
    there was nothing to stamp. Older checkpoints left unstamped are covered
    by the newer one (the log only grows). Raises `tsa_client.TsaUnavailable`
    when no TSA answers (the checkpoint keeps its built-in token only, and
    the caller says so) and `TimeStampInvalid` for a reply that does not
    verify."""
    settings = archive.settings
    row = archive.database.one("SELECT size, note, external_tsr FROM tlog_checkpoints ORDER BY size DESC LIMIT 1")
    if row is None or row["external_tsr"] is not None or not settings.tsa_urls:
        return None
    digest = hashlib.sha256(row["note"].encode("utf-8")).digest()
    url, reply, _ = ask_external_tsas(settings.tsa_urls, digest, settings.tsa_ca_file.read_bytes())
    with archive.database.transaction() as db:
        db.execute("UPDATE tlog_checkpoints SET external_tsr = ?, external_tsa_url = ?, external_stamped_at = ? "
                   "WHERE size = ? AND external_tsr IS NULL", [reply, url, archive.now(), row["size"]])
    return row["size"]


class CheckpointStampingJob:
    """The scheduler's job for `stamp_checkpoint_externally`, never raising;
    after a failure it waits before asking again (`tsa_client.RetryPause`),
    and says once that checkpoints carry the built-in TSA's token
    only until an external one answers again."""

    def __init__(self, archive: Archive, monotonic=time.monotonic):
        self.archive = archive
        self.pause = RetryPause(archive.settings.log_checkpoint_seconds, monotonic)

    def __call__(self) -> None:
        if not self.pause.due():
            return
        try:
            stamp_checkpoint_externally(self.archive)
        except Exception as exc:  # a TSA down, a bad reply, an unreadable CA file
            if not self.pause.failures:
                log.warning("checkpoints are time-stamped by the built-in TSA only until an external one answers: "
                            "%s", exc)
            self.pause.failed()
            return
        if self.pause.succeeded():
            log.info("checkpoints are time-stamped externally again")


def _published_size(archive: Archive) -> int:
    """The size of the newest checkpoint: what tiles may be served for (a
    leaf not yet under a checkpoint is not published yet)."""
    return archive.database.one("SELECT COALESCE(MAX(size), 0) AS size FROM tlog_checkpoints")["size"]


def _published(wanted: Tile, row_length: int) -> bool:
    """Whether a tile of a row of `row_length` hashes (or leaves) exists: a
    full tile the row covers, or a partial one shorter than full that fits
    (any width up to the row's end, so a reader holding an older checkpoint
    finds its own)."""
    end = wanted.index * TILE_WIDTH + wanted.width
    return end <= row_length and (wanted.full or end > wanted.index * TILE_WIDTH)


def tile(archive: Archive, wanted: Tile) -> bytes:
    """The bytes of a hash tile of the published tree (C2SP tlog-tiles): a
    full tile once the tree covers it, a partial one of exactly the width
    the newest checkpoint's tree has. `NotFound` for any other."""
    if not _published(wanted, _published_size(archive) >> (TILE_HEIGHT * wanted.level)):
        raise NotFound("The log has no such tile (yet).")
    with archive.database.snapshot() as db:
        return tile_bytes(wanted, hash_reader(db))


def entry_bundle(archive: Archive, wanted: Tile) -> bytes:
    """The leaf data of a level-0 tile's leaves, as a C2SP tlog-tiles entry
    bundle (each leaf a 32-byte commitment). `NotFound` as for `tile`."""
    if not _published(wanted, _published_size(archive)):
        raise NotFound("The log has no such entry bundle (yet).")
    first = wanted.index * TILE_WIDTH
    rows = archive.database.query("SELECT data FROM tlog_leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
                                  [first, first + wanted.width])
    return pack_entries([bytes(row["data"]) for row in rows])


def inclusion_proof(archive: Archive, index: int, size: int) -> list[bytes]:
    """The proof that leaf `index` is in the tree of `size` leaves (a size
    some checkpoint has). `NotFound` when it is not."""
    with archive.database.snapshot() as db:
        if not 0 <= index < size <= log_size(db):
            raise NotFound(f"Leaf {index} is not in a tree of size {size} of this log.")
        return prove_inclusion(size, index, hash_reader(db))


def consistency_proof(archive: Archive, old_size: int, new_size: int) -> list[bytes]:
    """The proof that the tree of `old_size` is a prefix of that of
    `new_size` (for witnesses). `NotFound` for sizes the log never had."""
    with archive.database.snapshot() as db:
        if not 0 < old_size <= new_size <= log_size(db):
            raise NotFound(f"No consistency proof from size {old_size} to {new_size} in this log.")
        return prove_consistency(old_size, new_size, hash_reader(db))


def sign_receipt(archive: Archive, *, recording_id: str, index: int, ciphertext_sha256: str, received_at: str,
                 log_index: int, leaf: bytes | None = None) -> dict:
    """The signed receipt of an acknowledged chunk (docs/transparency.md):
    what the organisation acknowledged and when, with the chunk's leaf in
    the log, signed with the log's key so a phone or its lawyer can show it
    whatever later happens to the records (`evidence.receipt`)."""
    if leaf is None:  # a retry's answer: the leaf as the first one made it
        leaf = bytes(archive.database.one("SELECT data FROM tlog_leaves WHERE idx = ?", [log_index])["data"])
    return signed_receipt(archive.keys.log_private, log_origin=log_origin(archive), leaf_index=log_index,
                          leaf=leaf, recording_id=recording_id, index=index, ciphertext_sha256=ciphertext_sha256,
                          received_at=received_at)


def leaf_of_entry(archive: Archive, audit_id: int) -> tuple[int, bytes] | None:
    """`(leaf index, salt)` of an audit entry's leaf, or None for an entry
    from before the log (for bundles and receipts, never served alone)."""
    row = archive.database.one("SELECT idx, salt FROM tlog_leaves WHERE audit_id = ?", [audit_id])
    return (row["idx"], bytes(row["salt"])) if row else None


def check_log(database, verifier: Ed25519Verifier | None = None, origin: str | None = None) -> tuple[str | None, int, int]:
    """Check the transparency log in the records against the audit log and
    its own signed checkpoints, streaming (memory: log2 n hashes): leaf
    indexes run 0, 1, 2 ... each for the next audit entry, every leaf's data
    is the commitment to its entry's hash (an entry deleted or edited breaks
    it), every entry since the first leaf has one, and the tree rebuilt from
    the leaves has the root every kept checkpoint signed (and, with the log's
    key, the newest note verifies). Returns `(problem or None, leaves,
    newest checkpoint size)`; never raises for a broken log."""
    checkpoints = {row["size"]: row["note"] for row in database.query(
        "SELECT size, note FROM tlog_checkpoints ORDER BY size")}
    frontier: dict[int, bytes] = {}

    def read(coordinates):
        return [frontier[level] for level, _ in coordinates]

    def root_matches(size: int) -> str | None:
        note = checkpoints[size]
        try:
            signed = parse_checkpoint(note[:note.index("\n\n") + 1])
        except (ValueError, InvalidEvidence):
            return f"the kept checkpoint of size {size} is not a checkpoint"
        if signed.root_hash != tree_hash(size, read):
            return (f"the log's leaves no longer hash to the root its checkpoint of size {size} signed (a leaf "
                    "or an audit entry under it was changed or removed)")
        return None

    if 0 in checkpoints and (problem := root_matches(0)):
        return problem, 0, max(checkpoints)
    expected, previous_entry, first_entry = 0, None, None
    after = -1
    while True:
        rows = database.query(
            "SELECT l.idx, l.audit_id, l.salt, l.data, a.sha256 FROM tlog_leaves l "
            "LEFT JOIN audit a ON a.id = l.audit_id WHERE l.idx > ? ORDER BY l.idx LIMIT 5000", [after])
        if not rows:
            break
        for row in rows:
            index, audit_id = row["idx"], row["audit_id"]
            if index != expected:
                return f"leaf {expected} of the transparency log is missing", expected, max(checkpoints, default=0)
            if previous_entry is not None and audit_id != previous_entry + 1:
                return (f"leaf {index} is for audit entry {audit_id}, not {previous_entry + 1}: an entry between "
                        "them has no leaf"), expected, max(checkpoints, default=0)
            if row["sha256"] is None:
                return (f"leaf {index} commits to audit entry {audit_id}, which is gone (deleted)", expected,
                        max(checkpoints, default=0))
            if bytes(row["data"]) != log_leaf(bytes(row["salt"]), row["sha256"]):
                return (f"leaf {index} no longer commits to audit entry {audit_id} (the entry or the leaf was "
                        "changed)"), expected, max(checkpoints, default=0)
            for stored in stored_hashes_for_leaf(index, leaf_hash(bytes(row["data"])), read):
                frontier[stored.level] = stored.hash
            first_entry = audit_id if first_entry is None else first_entry
            previous_entry, expected = audit_id, index + 1
            if expected in checkpoints and (problem := root_matches(expected)):
                return problem, expected, max(checkpoints)
        after = rows[-1]["idx"]
    newest = max(checkpoints, default=0)
    if newest > expected:
        return (f"the log's checkpoint of size {newest} is signed, but only {expected} leaves are held (newest "
                "leaves, and with them audit entries, were deleted)"), expected, newest
    if first_entry is not None:
        later = database.one("SELECT COUNT(*) AS n FROM audit WHERE id >= ?", [first_entry])["n"]
        if later != expected:
            return (f"{later} audit entries were written since the log began, but it holds {expected} leaves"
                    ), expected, newest
    if verifier is not None and origin is not None:
        row = database.one("SELECT value FROM meta WHERE key = ?", [_NOTE_KEY])
        if row is not None:
            try:
                open_checkpoint(row["value"], origin, [verifier])
            except InvalidEvidence:
                return "the newest checkpoint does not verify with the log's key", expected, newest
    return None, expected, newest
