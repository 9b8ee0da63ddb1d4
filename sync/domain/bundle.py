"""The copy bundle: one zip a lawyer can hand to a court and to the other
side's expert, checkable offline with openssl alone or with `witness-verify`
(`sync/evidence/verify.py`). The layout, its file names and `copy.json` are
an evidence format of their own (`sync/evidence/layout.py`, and
docs/copies.md); this module fills it from the archive.

The footage is the chunks listed in the newest manifest version, decrypted
and concatenated in index order, streamed into the zip one chunk at a time
(memory stays flat however long the recording). No IP address or password
is ever recorded, so none can be copied; the device appears only by its
pseudonymous id.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from crypto.signing import public_key_pem
from crypto.tsa import time_stamp, token_time

from ..archive import Archive
from ..evidence.custody import custody_line, for_copy, public_entry
from ..evidence.layout import (
    CERTIFICATION,
    CUSTODY_LOG,
    CUSTODY_LOG_TOKEN,
    EXTERNAL_TSA_CHAIN,
    INDEX,
    INDEX_SIGNATURE,
    SIGNING_KEY,
    TSA_CHAIN,
    VERIFY_GUIDE,
    ListedFile,
    build_index,
    footage_name,
    manifest_member,
    top_folder,
)
from ..evidence.manifest import read_manifest
from ..records.rows import Chunk, CopyRequest, Manifest, Recording
from ..timefmt import format_time
from . import accounts
from .footage import FootageDamaged, iter_chunk_plaintexts, read_ahead


class BundleFailed(Exception):
    """The bundle cannot be built as asked; the message says why in words a
    custodian can act on."""


@dataclass(frozen=True)
class BundleFacts:
    """What was built: the zip's size and SHA-256, which manifest version
    it carries footage for, the footage hash, and when."""

    size: int
    sha256: str
    manifest_version: int
    footage_sha256: str
    built_at: str


def write_bundle(archive: Archive, request: CopyRequest, path: Path) -> BundleFacts:
    """Write the bundle of a copy request to `path`.
    Raises `BundleFailed` when the newest manifest's chunks are no longer all
    held intact (the next manifest version will list the gap; approve again
    after it is made)."""
    recording_id = request.recording_id
    with archive.database.snapshot() as db:
        recording = db.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ?", [recording_id])
        manifests = db.fetch(Manifest, "SELECT * FROM manifests WHERE recording_id = ? ORDER BY version",
                             [recording_id])
        held = db.fetch(Chunk, "SELECT * FROM chunks WHERE recording_id = ? ORDER BY idx", [recording_id])
    if recording is None or not manifests:
        raise BundleFailed("the recording has no manifest yet")
    latest = manifests[-1]
    manifest = read_manifest(latest.body, latest.version, "the newest manifest")
    wanted = {(chunk["index"], chunk["sha256"]) for chunk in manifest["chunks"]}
    rows = [row for row in held if (row.idx, row.sha256) in wanted]
    if len(rows) != len(wanted):
        raise BundleFailed(f"{len(wanted) - len(rows)} chunk(s) listed in manifest version {latest.version} are "
                           "no longer held; approve again once the recording is finalized anew")
    built_at = archive.now()
    folder = top_folder(request.id)
    external_chain = _external_chain(archive, manifests)
    files: list[ListedFile] = []

    output = _HashedOutput(path)
    with output, zipfile.ZipFile(output, "w", allowZip64=True) as zf:
        def add(name: str, data: bytes, *, compress: bool = False) -> None:
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=_zip_time(built_at))
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
            files.append(ListedFile(name, len(data), hashlib.sha256(data).hexdigest()))

        footage = footage_name(recording.content_type)
        footage_hash, footage_size = hashlib.sha256(), 0
        info = zipfile.ZipInfo(f"{folder}/{footage}", date_time=_zip_time(built_at))
        info.external_attr = 0o644 << 16
        try:
            with zf.open(info, "w", force_zip64=True) as out:
                # The whole footage's hash, checked against the manifest below,
                # is taken in the read-ahead thread with the reads and the
                # decryption; this one computes the zip's CRC and hands on.
                def hashed(pieces):
                    for _, plaintext in pieces:
                        footage_hash.update(plaintext)
                        yield plaintext

                for plaintext in read_ahead(hashed(iter_chunk_plaintexts(archive, recording, rows,
                                                                         check_hash=False))):
                    out.write(plaintext)
                    footage_size += len(plaintext)
        except FootageDamaged as exc:
            raise BundleFailed(f"{exc}; approve again once the recording is finalized anew") from exc
        if (footage_size, footage_hash.hexdigest()) != (manifest["footage"]["size"], manifest["footage"]["sha256"]):
            raise BundleFailed(f"the footage no longer matches manifest version {latest.version}")
        files.append(ListedFile(footage, footage_size, footage_hash.hexdigest()))

        stamps = []
        for row in manifests:
            version = row.version
            add(manifest_member(version, "manifest.json"), row.body, compress=True)
            add(manifest_member(version, "manifest.sig"), row.signature)
            if row.tsr is None:
                raise BundleFailed(f"manifest version {version} has no time-stamp token yet (made before the "
                                   "server had a TSA); the scheduler back-fills it at start-up")
            add(manifest_member(version, "manifest.tsr"), row.tsr)
            external = row.external_tsr if external_chain is not None else None
            if external is not None:
                add(manifest_member(version, "manifest.external.tsr"), external)
            stamps.append({"version": version, "sha256": row.sha256, "state": row.state,
                           "finalized_at": row.created_at, "time_stamped_at": format_time(token_time(row.tsr)),
                           "external": external is not None})
        add(SIGNING_KEY, public_key_pem(archive.keys.signing_private.public_key()).encode("ascii"))
        add(TSA_CHAIN, archive.keys.tsa.chain_pem().encode("ascii"))
        if external_chain is not None:
            add(EXTERNAL_TSA_CHAIN, external_chain)

        log_hash, log_size, log_entries, log_head = hashlib.sha256(), 0, 0, None
        info = zipfile.ZipInfo(f"{folder}/{CUSTODY_LOG}", date_time=_zip_time(built_at))
        info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
        with zf.open(info, "w", force_zip64=True) as out:
            for entry in _custody_entries(archive, recording_id, request.id):
                line = custody_line(entry)
                out.write(line)
                log_hash.update(line)
                log_size += len(line)
                log_entries += 1
                log_head = entry["sha256"]
        files.append(ListedFile(CUSTODY_LOG, log_size, log_hash.hexdigest()))
        log_token = time_stamp(archive.keys.tsa, log_hash.digest(), at=archive.clock())
        add(CUSTODY_LOG_TOKEN, log_token)

        organisation = accounts.organisation(archive, request.organisation_id)
        facts = {
            "request": request, "recording": recording, "manifest": manifest, "stamps": stamps,
            "footage": footage, "organisation": organisation, "built_at": built_at,
            "log_entries": log_entries, "log_head": log_head, "log_sha256": log_hash.hexdigest(),
            "log_time": format_time(token_time(log_token)), "external": external_chain is not None,
            "signing_key_id": archive.keys.signing_key_id,
        }
        add(CERTIFICATION, certification_text(facts).encode("utf-8"), compress=True)
        add(VERIFY_GUIDE, verify_text(facts).encode("utf-8"), compress=True)

        index = build_index(
            request_id=request.id,
            recording_id=recording_id,
            organisation_slug=organisation.slug,
            organisation_name=organisation.name,
            case_reference=request.case_reference,
            purpose=request.purpose,
            requested_by=request.requested_by,
            requested_at=request.created_at,
            approved_by=request.decided_by,
            approved_at=request.decided_at,
            approval_reason=request.decision_reason,
            built_at=built_at,
            manifest_version=latest.version,
            footage=footage,
            signing_key_id=archive.keys.signing_key_id,
            files=files,
        )
        add(INDEX, index, compress=True)
        signature = archive.keys.signing_private.sign(index)
        info = zipfile.ZipInfo(f"{folder}/{INDEX_SIGNATURE}", date_time=_zip_time(built_at))
        info.external_attr = 0o644 << 16
        zf.writestr(info, signature)

    return BundleFacts(size=output.size, sha256=output.sha256, manifest_version=latest.version,
                       footage_sha256=footage_hash.hexdigest(), built_at=built_at)


class _HashedOutput:
    """The zip's file, written and hashed as it is made, in a thread of its
    own (SHA-256 and writes release the GIL), so the bundle's hash needs no
    second pass over gigabytes. It cannot seek, so `zipfile` puts each
    member's sizes and CRC in a data descriptor after its bytes instead of
    going back to its header (a layout every unzip reads; the central
    directory has them too). Memory stays at a few pieces in flight. An
    error of the disk (full, failing) is raised by the next `write` or by
    closing."""

    def __init__(self, path: Path, depth: int = 4):
        self._file = open(path, "wb")
        self._hash = hashlib.sha256()
        self._pieces: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.size = 0
        self._writer = threading.Thread(target=self._write_out, name="bundle-writer", daemon=True)
        self._writer.start()

    def write(self, data) -> int:
        if self._error is not None:
            raise self._error
        data = bytes(data) if not isinstance(data, bytes) else data
        self._pieces.put(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def _write_out(self) -> None:
        while (data := self._pieces.get()) is not None:
            if self._error is None:
                try:
                    self._hash.update(data)
                    self._file.write(data)
                except BaseException as exc:
                    self._error = exc

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def __enter__(self) -> "_HashedOutput":
        return self

    def __exit__(self, *exc_info) -> None:
        self._pieces.put(None)
        self._writer.join()
        self._file.close()
        if self._error is not None and exc_info[0] is None:
            raise self._error


def _external_chain(archive: Archive, manifests: list[Manifest]) -> bytes | None:
    """The external TSA's certificates, when any manifest has its token and
    the operator's CA file is readable (without it the tokens could not be
    checked, so they are left out rather than shipped unverifiable)."""
    if not any(row.external_tsr is not None for row in manifests):
        return None
    ca_file = archive.settings.tsa_ca_file
    if ca_file is None:
        return None
    try:
        return Path(ca_file).read_bytes()
    except OSError:
        return None


def _custody_entries(archive: Archive, recording_id: str, request_id: str, batch: int = 2000):
    """The recording's audit entries, oldest first, as the custody log of
    copy request `request_id` carries them (`custody.for_copy`: other copy
    requests' details withheld)."""
    after = 0
    while True:
        rows = archive.database.query(
            "SELECT * FROM audit WHERE recording_id = ? AND id > ? ORDER BY id LIMIT ?", [recording_id, after, batch])
        if not rows:
            return
        for row in rows:
            yield for_copy(public_entry(row), request_id)
        after = rows[-1]["id"]


def _zip_time(wire_time: str) -> tuple[int, int, int, int, int, int]:
    # Zip stores local-looking times without a zone; ours are UTC.
    return (int(wire_time[0:4]), int(wire_time[5:7]), int(wire_time[8:10]),
            int(wire_time[11:13]), int(wire_time[14:16]), int(wire_time[17:19]))


def _ranges(ranges: list[list[int]]) -> str:
    if not ranges:
        return "none"
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in ranges)


def certification_text(facts: dict) -> str:
    """CERTIFICATION.md: what was copied, its hashes and times, and how the
    system keeps and copies footage, with a certification for a custodian
    to complete (adaptable under US Federal Rules of Evidence 902(14) and
    902(11)). Bracketed fields are for the certifying person."""
    request, recording, manifest = facts["request"], facts["recording"], facts["manifest"]
    organisation = facts["organisation"]
    chunks = manifest["chunks"]
    if manifest["final_index"] is not None:
        held = f"{len(chunks)} of {manifest['final_index'] + 1} (the device marked piece {manifest['final_index']} as its last)"
    else:
        highest = chunks[-1]["index"] if chunks else None
        held = (f"{len(chunks)}; the recording's full length is unknown, because the device never marked a last "
                f"piece (highest piece received: {highest})")
    if manifest["state"] == "complete":
        why = " (the device marked its last piece and every piece up to it arrived)"
    elif manifest["final_index"] is not None:
        why = " (the device marked its last piece, but some pieces before it never arrived)"
    else:
        why = (" (the device stopped sending before marking a last piece, e.g. it was knocked away, seized or lost "
               "its connection)")
    if facts["external"]:
        independence = ("The server's own time-stamping authority is run by the same organisation as the server; "
                        "an independent time-stamping authority chosen by the operator also time-stamped every "
                        "manifest, and its tokens do not rest on the organisation's keys.")
    else:
        independence = ("The time-stamping authority is the server's own, run by the same organisation: its tokens "
                        "show the time as that server attests it, and prove that nothing changed after that time. "
                        "They are not an independent third party's (the operator can add one, `WITNESS_TSA_URL`).")
    versions = "\n".join(
        f"| {s['version']} | {s['state']} | {s['finalized_at']} | {s['time_stamped_at']} | `{s['sha256']}` |"
        for s in facts["stamps"])
    external = (" An external time-stamping authority chosen by the operator also time-stamped the manifests "
                "(`manifest.external.tsr`, chain in `external-tsa-chain.pem`).") if facts["external"] else ""
    return f"""# Certification of a copy of electronic records

Prepared automatically by the Witness Sync server of **{organisation.name}** on {facts['built_at']}
for copy request `{request.id}`. It states what was copied and how. The last section is a
certification for a custodian or other qualified person to complete and sign; it is written so it can
be adapted into a certification under US Federal Rules of Evidence 902(14) (data copied from an
electronic device, storage medium or file, authenticated by a process of digital identification) and
902(11). It is not legal advice: counsel should adapt it to the court and jurisdiction.

## What was copied

- Recording: `{recording.id}`
- Recording device: pseudonymous id `{recording.device_id}` (the service keeps no name, phone number
  or network address of the person who recorded)
- Media type: {recording.content_type}; footage file in this copy: `{facts['footage']}`
- Footage size: {manifest['footage']['size']} bytes
- Footage SHA-256: `{manifest['footage']['sha256']}`
- Recording started (device clock): {recording.started_at}
- First piece received by the server: {manifest['first_received_at']}
- Last piece received by the server: {manifest['last_received_at']}
- State when last finalized: **{manifest['state']}**{why}
- Pieces held: {held}; missing pieces (by index): {_ranges(manifest['gaps'])}
- Merkle root of the pieces' SHA-256 digests (RFC 6962): `{manifest['merkle_root']}`

Manifest versions (each signed with the server's Ed25519 key `{facts['signing_key_id']}` and time-stamped
under RFC 3161 by the server's time-stamping authority):{external}

| version | state | finalized (server clock) | time-stamped | manifest SHA-256 |
| --- | --- | --- | --- | --- |
{versions}

{independence}

## Who asked, who approved

- Case reference: {request.case_reference}
- Purpose: {request.purpose}
- Requested by `{request.requested_by}` on {request.created_at}
- Approved by `{request.decided_by}` on {request.decided_at}{f": {request.decision_reason}" if request.decision_reason else ''}

## The process that produced these records

1. While recording, the witness's device cut the video into pieces of about one second, encrypted each
   with AES-256-GCM under a key sealed to the server (HPKE), and uploaded each piece as soon as it was
   recorded.
2. For every piece the server checked its SHA-256 digest and its authentication tag before storing it,
   stored the encrypted bytes exactly as received, made them durable on disk (fsync), recorded the time
   of receipt, and only then acknowledged it. A second upload of different bytes for a piece already
   held is refused and logged; the first bytes are kept.
3. When the device ended the recording, or after it fell silent, the server wrote a manifest: every
   piece's index, size, SHA-256 and times, the missing pieces, the SHA-256 of the whole footage, and the
   Merkle root. It signed the exact manifest bytes and had them time-stamped. A piece arriving later
   produced a new manifest version chained to the previous one; no version is ever changed.
4. The footage in this copy is the pieces listed in manifest version {manifest['version']}, decrypted and
   joined in index order. It was not re-encoded, transcoded or edited: its SHA-256 equals the value in
   the signed, time-stamped manifest.
5. Every action on the recording (receipt of each piece, every view and download by staff, this copy's
   request, approval and build) is an entry in an append-only, hash-chained audit log; entries about
   other copy requests keep who and when, with their details (another case) withheld. The
   {facts['log_entries']} entries about this recording are in `custody-log.jsonl` (last entry hash
   `{facts['log_head']}`), time-stamped at {facts['log_time']}.
6. `copy.json` lists every file of this copy with its SHA-256 and is signed with the same server key.

`VERIFY.md` shows how anyone can check all of the above with openssl alone, offline; the
`witness-verify` program checks everything at once.

## Identification by hash value

The file `{facts['footage']}` in this copy is identified by its SHA-256 hash value
`{manifest['footage']['sha256']}`. That value is recorded in manifest version {manifest['version']}
(SHA-256 `{facts['stamps'][-1]['sha256']}`), whose signature verifies with the server's public key in
`signing.pub.pem` and whose RFC 3161 time-stamp token dates it to {facts['stamps'][-1]['time_stamped_at']}.

## Certification (to be completed by a qualified person)

I, [full name], certify:

1. I am [title] of {organisation.name} [or: a person qualified by my knowledge of the system
   described above], and I am familiar with how the Witness Sync service receives, stores and copies
   recordings.
2. The records in this copy were made at or near the time of the events they show, by, or from
   information transmitted by, the recording device; they were kept in the course of
   {organisation.name}'s regularly conducted activity of preserving witness recordings, and making
   and keeping them was a regular practice of that activity.
3. The copy was produced by the process described above, which produces an accurate result. I
   confirmed that the SHA-256 hash value of `{facts['footage']}` is
   `{manifest['footage']['sha256']}`, identical to the value in the signed, time-stamped manifest.
4. [Anything further the certifying person knows of their own knowledge.]

I declare under penalty of perjury under the laws of [the United States of America / jurisdiction]
that the foregoing is true and correct.

Executed on [date] at [place].

Signature: ______________________________    Name: [full name]    Title: [title]
"""


def verify_text(facts: dict) -> str:
    """VERIFY.md: the exact openssl commands, run inside the unzipped folder."""
    manifest, stamps = facts["manifest"], facts["stamps"]
    latest = manifest["version"]
    per_version = "\n".join(
        f"openssl pkeyutl -verify -pubin -inkey {SIGNING_KEY} -rawin "
        f"-in {manifest_member(s['version'], 'manifest.json')} -sigfile {manifest_member(s['version'], 'manifest.sig')}"
        for s in stamps)
    tokens = "\n".join(
        f"openssl ts -verify -data {manifest_member(s['version'], 'manifest.json')} "
        f"-in {manifest_member(s['version'], 'manifest.tsr')} -CAfile {TSA_CHAIN}"
        for s in stamps)
    external = "\n".join(
        f"openssl ts -verify -data {manifest_member(s['version'], 'manifest.json')} "
        f"-in {manifest_member(s['version'], 'manifest.external.tsr')} -CAfile {EXTERNAL_TSA_CHAIN}"
        for s in stamps if s["external"])
    external_section = f"""
The external time-stamping authority's tokens verify the same way against its own certificates:

```
{external}
```
""" if external else ""
    chain = "\n".join(
        f"openssl dgst -sha256 {manifest_member(s['version'], 'manifest.json')}" for s in stamps[:-1])
    chain_section = f"""
## 4. The manifest versions form one chain

Each version names the SHA-256 of the one before in `previous_manifest_sha256`:

```
{chain}
```

The digest printed for version *n* must equal `previous_manifest_sha256` in version *n + 1*
(`grep -o '"previous_manifest_sha256":"[0-9a-f]*"' manifests/v*/manifest.json`).
""" if chain else """
## 4. The manifest versions form one chain

This recording has a single manifest version (its `previous_manifest_sha256` is null).
"""
    return f"""# Verifying this copy

Everything below runs offline, inside this folder (the one holding `copy.json`), with OpenSSL 3.0 or
newer and standard shell tools. No program of the service that made the copy is needed. The
`witness-verify` program (`witness-verify <this zip or folder>`) runs every check at once and also
recomputes the per-piece hashes, the Merkle root and the custody log's hash chain.

Each `pkeyutl` command must print `Signature Verified Successfully`, and each `ts -verify` command
`Verification: OK` (openssl may also print the configuration file it read).
Any other result means the file was changed.

## 1. This copy's files are the ones the server listed and signed

```
openssl pkeyutl -verify -pubin -inkey {SIGNING_KEY} -rawin -in {INDEX} -sigfile {INDEX_SIGNATURE}
```

`{INDEX}` lists every other file with its SHA-256; compare with `openssl dgst -sha256 <file>`.

## 2. The footage is the footage described by the signed manifest

```
openssl dgst -sha256 {facts['footage']}
```

The digest must be `{manifest['footage']['sha256']}`, the `footage` value in the newest manifest:
`grep -o '"footage":{{[^}}]*}}' {manifest_member(latest, 'manifest.json')}`.

## 3. Every manifest version is signed by the server and was time-stamped

```
{per_version}
{tokens}
```

To see when each token says the manifest existed (`Time stamp:` line):

```
openssl ts -reply -in {manifest_member(latest, 'manifest.tsr')} -text
```
{external_section}{chain_section}
## 5. The custody log existed, as it is, when it was time-stamped

```
openssl ts -verify -data {CUSTODY_LOG} -in {CUSTODY_LOG_TOKEN} -CAfile {TSA_CHAIN}
```

Each line of `{CUSTODY_LOG}` is one audit entry about this recording, oldest first. An entry's
`sha256` is the SHA-256 of the entry itself without `sha256` (keys sorted, no spaces, UTF-8; the
`organisation_id` and `recording_prev_sha256` keys left out when null), and its
`recording_prev_sha256` is the `sha256` of the line before it (64 zeros on the first). Entries about
other copy requests have their `detail` withheld (`"detail_withheld":true`): their own hash cannot be
recomputed, but the next line's link covers it. `witness-verify` checks this chain.

## 6. Which keys these are

The checks above prove the files are unchanged since the server signed and time-stamped them. That
they come from this organisation's server rests on the keys: compare these fingerprints with the ones
the organisation publishes (its server's `/v1/keys` gives the signing key and the TSA certificates
these are computed from). `witness-verify` prints the same two fingerprints:

```
openssl pkey -pubin -in {SIGNING_KEY} -outform DER | openssl dgst -sha256
openssl x509 -in {TSA_CHAIN} -noout -subject -fingerprint -sha256
openssl crl2pkcs7 -nocrl -certfile {TSA_CHAIN} | openssl pkcs7 -print_certs -noout
```
"""
