"""`witness-verify BUNDLE`: check a copy bundle offline, without the server
and without the network, and say in plain words what holds.

It checks that the bundle's file list is signed by the server key it
carries and that every file is unchanged; that every manifest version is
signed, time-stamped (RFC 3161, against the TSA chain in the bundle) and
chained to the one before; that the footage, every piece of it and the
Merkle root match the newest manifest; and that the custody log's hash chain
is whole, time-stamped, and records every manifest version and this copy's
approval. It prints a numbered checklist and exits 0 when every check
passes, 1 naming the first that failed, 2 when the bundle cannot be opened.

What it cannot tell is whose keys these are: it prints their fingerprints
to compare with the ones the organisation publishes.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from crypto import InvalidEvidence
from crypto.hashing import merkle_root
from crypto.signing import signing_key_id, verify_signature
from crypto.tsa import TimeStampInvalid, verify_time_stamp

from .canonical import MalformedEvidence
from .custody import GENESIS, entry_digest, may_be_withheld, read_custody_line
from .layout import (
    CUSTODY_LOG,
    CUSTODY_LOG_TOKEN,
    EXTERNAL_TSA_CHAIN,
    INDEX,
    INDEX_SIGNATURE,
    MANIFEST_MEMBER,
    SIGNING_KEY,
    TSA_CHAIN,
    manifest_member,
    read_index,
)
from .manifest import read_manifest

_SMALL_LIMIT = 512 * 1024 * 1024  # members read whole (manifests, keys, tokens) must be below this
_DESKTOP_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class BundleUnreadable(Exception):
    """Not a bundle at all: missing, not a zip or folder, no copy.json."""


class CheckFailed(Exception):
    """This check found the bundle does not hold up; the message says why."""


class NotChecked(Exception):
    """This check could not run because an earlier one failed."""


class Bundle:
    """The members of a bundle, zipped or unzipped, by their path below the
    bundle's folder (`copy.json`, `manifests/v1/manifest.json`, ...)."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            base = path if (path / INDEX).is_file() else _single_subfolder(path)
            self._zip, self._base = None, base
            # What desktops add to a folder by themselves is not part of it.
            self.names = sorted(str(p.relative_to(base)) for p in base.rglob("*")
                                if p.is_file() and p.name not in _DESKTOP_FILES and "__MACOSX" not in p.parts)
            self.problems: list[str] = []
        elif path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise BundleUnreadable(f"{path} is not a zip file: {exc}") from None
            members = [info.filename for info in self._zip.infolist() if not info.is_dir()]
            tops = {name.split("/", 1)[0] for name in members}
            if len(tops) != 1 or any("/" not in name for name in members):
                raise BundleUnreadable(f"{path} does not hold exactly one bundle folder")
            self._prefix = tops.pop() + "/"
            self.names = sorted(set(name[len(self._prefix):] for name in members))
            # Two members of one name: zipfile reads the last, unzip keeps the
            # first, so the files checked might not be the files a reader sees.
            seen, self.problems = set(), []
            for name in members:
                if name in seen:
                    self.problems.append(f"the zip holds two files named {name}, which a genuine copy never does")
                seen.add(name)
                if name.startswith("/") or "\\" in name or ".." in name.split("/"):
                    self.problems.append(f"the zip holds a file with an unsafe name ({name})")
        else:
            raise BundleUnreadable(f"{path} does not exist")
        if INDEX not in self.names:
            raise BundleUnreadable(f"{path} has no {INDEX}: it is not a Witness Sync copy")

    def open(self, name: str) -> BinaryIO:
        if name not in self.names:
            raise CheckFailed(f"the file {name} is missing from the bundle")
        if self._zip is not None:
            return self._zip.open(self._prefix + name)
        return open(self._base / name, "rb")

    def read(self, name: str) -> bytes:
        with self.open(name) as member:
            data = member.read(_SMALL_LIMIT + 1)
        if len(data) > _SMALL_LIMIT:
            raise CheckFailed(f"the file {name} is far larger than such a file can be")
        return data

    def blocks(self, name: str, size: int = 1 << 20) -> Iterator[bytes]:
        with self.open(name) as member:
            yield from iter(lambda: member.read(size), b"")


def _single_subfolder(path: Path) -> Path:
    folders = [p for p in path.iterdir() if p.is_dir()]
    if len(folders) == 1 and (folders[0] / INDEX).is_file():
        return folders[0]
    raise BundleUnreadable(f"{path} has no {INDEX}: it is not a Witness Sync copy")


@dataclass
class Outcome:
    number: int
    title: str
    status: str  # "passed", "FAILED", "not checked"
    detail: str


@dataclass
class Verification:
    """The checklist as it was worked through."""

    outcomes: list[Outcome] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    @property
    def first_failure(self) -> Outcome | None:
        return next((o for o in self.outcomes if o.status != "passed"), None)


class _Context:
    """What earlier checks established, for later ones."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.index: dict | None = None
        self.key: Ed25519PublicKey | None = None
        self.manifests: list[tuple[bytes, dict]] = []
        self.chunk_digests: list[bytes] | None = None
        self.tsa_roots: set[str] = set()

    def need(self, value, what: str):
        if value is None or value == []:
            raise NotChecked(f"needs {what}, which an earlier check could not establish")
        return value


def verify_bundle(path: Path) -> Verification:
    """Run every check on the bundle at `path` (zip or unzipped folder).
    Raises `BundleUnreadable` when it is not a bundle at all."""
    context = _Context(Bundle(path))
    result = Verification()
    checks: list[tuple[str, Callable[[_Context], str]]] = [
        ("The list of files in this copy is signed by the server's signing key", _check_index_signature),
        ("Every file in this copy is listed, and none was changed, added or removed", _check_files),
        ("Every manifest version is signed by the server's signing key", _check_manifest_signatures),
        ("The manifest versions form one unbroken chain", _check_manifest_chain),
        ("Every manifest version carries a valid RFC 3161 time-stamp", _check_manifest_tokens),
        ("The footage file is exactly the footage the newest manifest describes", _check_footage),
        ("Every piece of the footage has the SHA-256 the manifest lists", _check_pieces),
        ("The Merkle root of the pieces matches the manifest", _check_merkle_root),
        ("The custody log's hash chain is whole and time-stamped, and records every manifest "
         "version and this copy's approval", _check_custody_log),
    ]
    for number, (title, check) in enumerate(checks, start=1):
        try:
            detail, status = check(context), "passed"
        except CheckFailed as exc:
            detail, status = str(exc), "FAILED"
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            # A damaged zip (a bad download): its CRC or structure fails as
            # a member is read.
            detail, status = f"the bundle file is damaged and cannot be read whole ({exc})", "FAILED"
        except NotChecked as exc:
            detail, status = str(exc), "not checked"
        result.outcomes.append(Outcome(number, title, status, detail))
    result.facts = _facts(context)
    return result


def _check_index_signature(ctx: _Context) -> str:
    try:
        key = serialization.load_pem_public_key(ctx.bundle.read(SIGNING_KEY))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CheckFailed(f"{SIGNING_KEY} is not a readable public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckFailed(f"{SIGNING_KEY} is not an Ed25519 key")
    raw = ctx.bundle.read(INDEX)
    try:
        verify_signature(key, ctx.bundle.read(INDEX_SIGNATURE), raw)
    except InvalidEvidence:
        raise CheckFailed(f"the signature {INDEX_SIGNATURE} does not match {INDEX} under that key: "
                          "the file list was changed after the server signed it") from None
    index = _read(read_index, raw)
    ctx.key, ctx.index = key, index
    return f"signed by key {signing_key_id(key)}"


def _check_files(ctx: _Context) -> str:
    if ctx.bundle.problems:
        raise CheckFailed(ctx.bundle.problems[0])
    index = ctx.need(ctx.index, "the signed file list")
    listed = {item["path"]: item for item in index["files"]}
    present = set(ctx.bundle.names) - {INDEX, INDEX_SIGNATURE}
    if present - set(listed):
        raise CheckFailed(f"the file {sorted(present - set(listed))[0]} is in the bundle but not in the signed list")
    if set(listed) - present:
        raise CheckFailed(f"the file {sorted(set(listed) - present)[0]} is in the signed list but missing")
    for name in sorted(listed):
        digest, size = hashlib.sha256(), 0
        for block in ctx.bundle.blocks(name):
            digest.update(block)
            size += len(block)
        if size != listed[name]["size"] or digest.hexdigest() != listed[name]["sha256"]:
            raise CheckFailed(f"the file {name} was changed: its SHA-256 is not the one in the signed list")
    return f"{len(listed)} files, each with the SHA-256 in the signed list"


def _check_manifest_signatures(ctx: _Context) -> str:
    key, index = ctx.need(ctx.key, "the server's signing key"), ctx.need(ctx.index, "the signed file list")
    versions = sorted({int(m.group(1)) for name in ctx.bundle.names if (m := MANIFEST_MEMBER.match(name))})
    if not versions or versions != list(range(1, versions[-1] + 1)):
        raise CheckFailed(f"the manifest versions are not 1 to n without a hole (found {versions})")
    if versions[-1] != index["manifest_version"]:
        raise CheckFailed(f"the newest manifest is version {versions[-1]}, but the copy names version "
                          f"{index['manifest_version']}")
    for version in versions:
        raw = ctx.bundle.read(manifest_member(version, "manifest.json"))
        try:
            verify_signature(key, ctx.bundle.read(manifest_member(version, "manifest.sig")), raw)
        except InvalidEvidence:
            raise CheckFailed(f"the signature of manifest version {version} does not verify: the manifest or "
                              "its signature was changed") from None
        manifest = _read(read_manifest, raw, version, manifest_member(version, "manifest.json"))
        if manifest.get("recording_id") != index["recording_id"]:
            raise CheckFailed(f"manifest version {version} is about another recording")
        if manifest.get("signing_key_id") != signing_key_id(key):
            raise CheckFailed(f"manifest version {version} names another signing key")
        ctx.manifests.append((raw, manifest))
    return f"{len(versions)} version(s), all signed by key {signing_key_id(key)}"


def _check_manifest_chain(ctx: _Context) -> str:
    manifests = ctx.need(ctx.manifests, "the signed manifests")
    previous = None
    for raw, manifest in manifests:
        if manifest["previous_manifest_sha256"] != previous:
            raise CheckFailed(f"manifest version {manifest['version']} does not name the SHA-256 of version "
                              f"{manifest['version'] - 1} as its predecessor")
        previous = hashlib.sha256(raw).hexdigest()
    return f"version 1 to {len(manifests)}, each naming the SHA-256 of the one before"


def _check_manifest_tokens(ctx: _Context) -> str:
    manifests = ctx.need(ctx.manifests, "the signed manifests")
    chain = ctx.bundle.read(TSA_CHAIN)
    times = []
    for raw, manifest in manifests:
        version, digest = manifest["version"], hashlib.sha256(raw).digest()
        token = _token(chain, manifest_member(version, "manifest.tsr"), digest, ctx,
                       f"the time-stamp of manifest version {version}")
        times.append(f"v{version} at {_when(token.gen_time)}")
        external = manifest_member(version, "manifest.external.tsr")
        if external in ctx.bundle.names:
            token = _token(ctx.bundle.read(EXTERNAL_TSA_CHAIN), external, digest, ctx,
                           f"the external time-stamp of manifest version {version}")
            times.append(f"v{version} also by {token.tsa_name} at {_when(token.gen_time)}")
    return "; ".join(times)


def _check_footage(ctx: _Context) -> str:
    index = ctx.need(ctx.index, "the signed file list")
    _, manifest = ctx.need(ctx.manifests, "the signed manifests")[-1]
    name = index["footage"]
    chunks = manifest["chunks"]
    whole, size, digests = hashlib.sha256(), 0, []
    piece, piece_left, pieces = hashlib.sha256(), None, iter(chunks)
    current = next(pieces, None)
    piece_left = current["size"] if current else 0
    for block in ctx.bundle.blocks(name):
        whole.update(block)
        size += len(block)
        while block:
            if current is None:
                block = b""  # more bytes than the pieces add up to; the size check below says so
                continue
            take = block[:piece_left]
            piece.update(take)
            block, piece_left = block[len(take):], piece_left - len(take)
            if piece_left == 0:
                digests.append(piece.digest())
                piece, current = hashlib.sha256(), next(pieces, None)
                piece_left = current["size"] if current else 0
    while current is not None and piece_left == 0:  # empty pieces at the end
        digests.append(piece.digest())
        piece, current = hashlib.sha256(), next(pieces, None)
        piece_left = current["size"] if current else 0
    if size != manifest["footage"]["size"] or whole.hexdigest() != manifest["footage"]["sha256"]:
        raise CheckFailed(f"{name} is {size} bytes with SHA-256 {whole.hexdigest()}, but manifest version "
                          f"{manifest['version']} says {manifest['footage']['size']} bytes with SHA-256 "
                          f"{manifest['footage']['sha256']}")
    ctx.chunk_digests = digests if len(digests) == len(chunks) else None
    return f"{name}: {size} bytes, SHA-256 {whole.hexdigest()}"


def _check_pieces(ctx: _Context) -> str:
    _, manifest = ctx.need(ctx.manifests, "the signed manifests")[-1]
    digests = ctx.need(ctx.chunk_digests if ctx.chunk_digests is not None else None, "the checked footage")
    chunks = manifest["chunks"]
    if sum(chunk["size"] for chunk in chunks) != manifest["footage"]["size"]:
        raise CheckFailed("the pieces' sizes in the manifest do not add up to the footage size")
    for chunk, digest in zip(chunks, digests):
        if digest.hex() != chunk["sha256"]:
            raise CheckFailed(f"piece {chunk['index']} of the footage does not have the SHA-256 the manifest lists")
    gaps = manifest["gaps"]
    missing = "none missing" if not gaps else "missing: " + ", ".join(
        f"{a}" if a == b else f"{a} to {b}" for a, b in gaps)
    return f"{len(chunks)} pieces checked ({missing})"


def _check_merkle_root(ctx: _Context) -> str:
    _, manifest = ctx.need(ctx.manifests, "the signed manifests")[-1]
    digests = ctx.need(ctx.chunk_digests if ctx.chunk_digests is not None else None, "the checked footage")
    root = merkle_root(digests).hex()
    if root != manifest["merkle_root"]:
        raise CheckFailed(f"the Merkle root of the pieces is {root}, but the manifest says {manifest['merkle_root']}")
    return f"RFC 6962 root {root}"


def _check_custody_log(ctx: _Context) -> str:
    index = ctx.need(ctx.index, "the signed file list")
    manifests = ctx.need(ctx.manifests, "the signed manifests")
    digest, previous, linked, count = hashlib.sha256(), GENESIS, False, 0
    finalized, approved, withheld = {}, False, 0
    buffer = b""
    for block in ctx.bundle.blocks(CUSTODY_LOG):
        digest.update(block)
        buffer += block
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            count += 1
            entry, linked = _check_entry(line, count, previous, linked, index["recording_id"])
            previous = entry["sha256"]
            if entry.get("detail_withheld"):
                withheld += 1
                continue
            if entry["action"] == "recording.finalized":
                finalized[entry["detail"].get("version")] = entry["detail"].get("manifest_sha256")
            if entry["action"] == "copy.approved" and entry["detail"].get("request_id") == index["request_id"]:
                approved = True
    if buffer:
        raise CheckFailed(f"the custody log does not end with a complete line (after entry {count})")
    token = _token(ctx.bundle.read(TSA_CHAIN), CUSTODY_LOG_TOKEN, digest.digest(), ctx, "the custody log's time-stamp")
    for raw, manifest in manifests:
        if finalized.get(manifest["version"]) != hashlib.sha256(raw).hexdigest():
            raise CheckFailed(f"the custody log has no entry recording manifest version {manifest['version']} "
                              "with its SHA-256")
    if not approved:
        raise CheckFailed("the custody log has no approval of this copy request")
    others = f" ({withheld} about other copy requests, their details withheld)" if withheld else ""
    return f"{count} entries{others}, chained from the first to the last, time-stamped at {_when(token.gen_time)}"


def _check_entry(line: bytes, number: int, previous: str, linked: bool, recording_id: str) -> tuple[dict, bool]:
    """Check one custody log line against the line before it (`previous`
    is that entry's sha256; 64 zeros before the first line)."""
    entry = _read(read_custody_line, line, number)
    if entry.get("recording_id") != recording_id:
        raise CheckFailed(f"entry {entry.get('id')} of the custody log is about another recording")
    if entry.get("detail_withheld") is True:
        # Another copy request's entry: its detail is not in the bundle, so
        # its own hash cannot be recomputed; the next entry's link covers it.
        if not may_be_withheld(entry):
            raise CheckFailed(f"entry {entry.get('id')} of the custody log withholds what may not be withheld")
        if not isinstance(entry.get("sha256"), str):
            raise CheckFailed(f"line {number} of the custody log lacks the fields of an audit entry")
    else:
        try:
            recomputed = entry_digest(entry)
        except (KeyError, TypeError, ValueError):
            raise CheckFailed(f"line {number} of the custody log lacks the fields of an audit entry") from None
        if recomputed != entry["sha256"]:
            raise CheckFailed(f"entry {entry['id']} of the custody log was changed: it no longer hashes to its "
                              "sha256")
    link = entry.get("recording_prev_sha256")
    if link is None:
        # Entries written before recordings had a chain of their own (an
        # older server) can only come first; they are checked by hash alone.
        if linked:
            raise CheckFailed(f"entry {entry['id']} of the custody log is not linked to the one before it")
    elif link != previous:
        raise CheckFailed(f"entry {entry['id']} of the custody log does not link to the entry before it "
                          "(an entry was removed, added or reordered)")
    return entry, linked or link is not None


def _token(chain: bytes, name: str, digest: bytes, ctx: _Context, what: str):
    try:
        facts = verify_time_stamp(ctx.bundle.read(name), digest, chain)
    except TimeStampInvalid as exc:
        raise CheckFailed(f"{what} does not verify: {exc}") from None
    ctx.tsa_roots.add(facts.root_sha256)
    return facts


def _read(reader: Callable[..., dict], *args) -> dict:
    """What an evidence format's reader makes of some bytes; its objection, a check's failure."""
    try:
        return reader(*args)
    except MalformedEvidence as exc:
        raise CheckFailed(str(exc)) from None


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(ctx: _Context) -> list[str]:
    facts = []
    if ctx.index is not None:
        facts += [f"Recording: {ctx.index['recording_id']}",
                  f"Case reference: {ctx.index['case_reference']}",
                  f"Copy made: {ctx.index['built_at']} (request {ctx.index['request_id']}, approved by "
                  f"{ctx.index['approved_by']})"]
    if ctx.manifests:
        manifest = ctx.manifests[-1][1]
        facts += [f"State: {manifest['state']}; first piece received {manifest['first_received_at']}, "
                  f"last {manifest['last_received_at']}"]
    if ctx.key is not None:
        der = ctx.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        facts.append(f"Server signing key SHA-256 fingerprint: {hashlib.sha256(der).hexdigest()}")
    try:
        certificate = x509.load_pem_x509_certificates(ctx.bundle.read(TSA_CHAIN))[0]
        facts.append("Time-stamping certificate SHA-256 fingerprint: "
                     + certificate.fingerprint(hashes.SHA256()).hex(":").upper())
    except (CheckFailed, ValueError, IndexError, OSError, zipfile.BadZipFile):
        pass
    for root in sorted(ctx.tsa_roots):
        facts.append(f"Time-stamping root certificate SHA-256 fingerprint: {bytes.fromhex(root).hex(':').upper()}")
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="witness-verify",
        description="Check a Witness Sync copy bundle offline: footage, pieces, Merkle root, manifests, "
                    "signatures, time-stamps and custody log.")
    parser.add_argument("bundle", type=Path, help="the bundle zip, or the folder it was unzipped into")
    args = parser.parse_args(argv)
    try:
        result = verify_bundle(args.bundle)
    except BundleUnreadable as exc:
        print(f"witness-verify: {exc}", file=sys.stderr)
        return 2
    print(f"Checking the copy {args.bundle}")
    for fact in result.facts:
        print(f"  {fact}")
    print()
    for outcome in result.outcomes:
        print(f"{outcome.number:2d}. [{outcome.status}] {outcome.title}.")
        print(f"    {outcome.detail}")
    print()
    failure = result.first_failure
    if failure is None:
        print(f"All {len(result.outcomes)} checks passed. Compare the key fingerprints above with the ones "
              "the organisation publishes to know whose server made this copy.")
        return 0
    print(f"NOT VERIFIED: check {failure.number} failed: {failure.detail}.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
