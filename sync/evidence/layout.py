"""The copy bundle's layout, format `witness-copy/1`: one folder,
`witness-copy-<request id>/`, zipped, holding

    footage.<ext>                 the original footage bytes, never re-encoded
    manifests/v<n>/manifest.json  every manifest version, exact signed bytes
    manifests/v<n>/manifest.sig   Ed25519 signature (64 raw bytes)
    manifests/v<n>/manifest.tsr   RFC 3161 token of the built-in TSA
    manifests/v<n>/manifest.external.tsr   the external TSA's, when kept
    signing.pub.pem               the server's signing key
    tsa-chain.pem                 built-in TSA certificate, then its root
    external-tsa-chain.pem        the external TSA's certificates, when used
    custody-log.jsonl             the recording's audit entries, oldest first
    custody-log.jsonl.tsr         built-in token over the custody log
    CERTIFICATION.md              what was copied, how, for adapting under FRE 902(14)
    VERIFY.md                     the exact openssl commands
    copy.json                     the request, and every file above with its size and SHA-256
    copy.json.sig                 Ed25519 signature over copy.json

docs/copies.md describes each file and what it proves; `sync.bundle`
writes bundles, `verify.py` checks them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from crypto.hashing import canonical_json

from .canonical import MalformedEvidence, read_canonical_object

COPY_FORMAT = "witness-copy/1"
INDEX, INDEX_SIGNATURE = "copy.json", "copy.json.sig"
SIGNING_KEY, TSA_CHAIN, EXTERNAL_TSA_CHAIN = "signing.pub.pem", "tsa-chain.pem", "external-tsa-chain.pem"
CUSTODY_LOG = "custody-log.jsonl"
CUSTODY_LOG_TOKEN = "custody-log.jsonl.tsr"
CERTIFICATION, VERIFY_GUIDE = "CERTIFICATION.md", "VERIFY.md"
MANIFEST_PARTS = ("manifest.json", "manifest.sig", "manifest.tsr", "manifest.external.tsr")
# A manifest version's file: its version number is group 1, its part group 2.
MANIFEST_MEMBER = re.compile(r"^manifests/v([1-9][0-9]{0,8})/(" + "|".join(map(re.escape, MANIFEST_PARTS)) + r")$")
FOOTAGE_EXTENSIONS = {"video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov", "video/x-matroska": "mkv",
                      "audio/mp4": "m4a", "audio/webm": "weba", "audio/ogg": "ogg", "audio/mpeg": "mp3"}


@dataclass(frozen=True)
class ListedFile:
    """A file as `copy.json` lists it: its path below the bundle's folder,
    its size and its SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


def top_folder(request_id: str) -> str:
    """The one folder a bundle's zip holds."""
    return f"witness-copy-{request_id}"


def footage_name(content_type: str) -> str:
    """The footage file's name, its extension from the media type (`bin`
    for one not listed)."""
    base = content_type.split(";", 1)[0].strip().lower()
    return f"footage.{FOOTAGE_EXTENSIONS.get(base, 'bin')}"


def manifest_member(version: int, part: str) -> str:
    """The path of one of manifest `version`'s files; `part` is one of
    `MANIFEST_PARTS`."""
    return f"manifests/v{version}/{part}"


def build_index(
    *,
    request_id: str,
    recording_id: str,
    organisation_slug: str,
    organisation_name: str,
    case_reference: str,
    purpose: str,
    requested_by: str,
    requested_at: str,
    approved_by: str,
    approved_at: str,
    approval_reason: str | None,
    built_at: str,
    manifest_version: int,
    footage: str,
    signing_key_id: str,
    files: Iterable[ListedFile],
) -> bytes:
    """The exact bytes of `copy.json` to sign: the request, who asked and
    approved it and when, the manifest version the footage is from, and
    every other file of the bundle (all but `copy.json` and its signature)."""
    return canonical_json({
        "format": COPY_FORMAT,
        "request_id": request_id,
        "recording_id": recording_id,
        "organisation": {"slug": organisation_slug, "name": organisation_name},
        "case_reference": case_reference,
        "purpose": purpose,
        "requested_by": requested_by,
        "requested_at": requested_at,
        "approved_by": approved_by,
        "approved_at": approved_at,
        "approval_reason": approval_reason,
        "built_at": built_at,
        "manifest_version": manifest_version,
        "footage": footage,
        "signing_key_id": signing_key_id,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256}
                  for f in sorted(files, key=lambda listed: listed.path)],
    })


def read_index(raw: bytes) -> dict:
    """`copy.json` from its exact bytes, as a dict of the fields above.
    Raises `MalformedEvidence` unless `raw` is canonical JSON of a
    `witness-copy/1` file list. It does not check the signature: verify
    that first."""
    index = read_canonical_object(raw, INDEX)
    if index.get("format") != COPY_FORMAT:
        raise MalformedEvidence(f"{INDEX} is not a {COPY_FORMAT} file list")
    return index
