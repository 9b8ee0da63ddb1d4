"""The signed manifest, format `witness-manifest/1`: what the server
received of one recording and when, as exact canonical JSON bytes.

Version n+1 names the SHA-256 of version n in `previous_manifest_sha256`
(null in version 1), so the versions of a recording form one chain. The
footage is the chunks' plaintexts joined in index order; `merkle_root` is
the RFC 6962 tree hash over their SHA-256 digests in that order.
docs/copies.md says what each field proves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from crypto.hashing import canonical_json, merkle_root

from .canonical import MalformedEvidence, read_canonical_object

MANIFEST_FORMAT = "witness-manifest/1"


@dataclass(frozen=True)
class ManifestChunk:
    """One chunk as a manifest lists it: its plaintext size and SHA-256 (hex),
    the stored ciphertext's, when it arrived (server clock) and was captured
    (device clock, or None), and the device's signature (or None)."""

    index: int
    size: int
    sha256: str
    ciphertext_size: int
    ciphertext_sha256: str
    received_at: str
    captured_at: str | None
    device_signature: str | None


def build_manifest(
    *,
    version: int,
    previous_sha256: str | None,
    recording_id: str,
    device_id: str,
    content_type: str,
    state: str,
    started_at: str,
    first_received_at: str | None,
    last_received_at: str | None,
    finalized_at: str,
    final_index: int | None,
    chunks: Sequence[ManifestChunk],
    gaps: list[list[int]],
    footage_size: int,
    footage_sha256: str,
    signing_key_id: str,
) -> bytes:
    """The exact bytes of manifest `version` to sign and time-stamp. `chunks`
    in index order; `gaps` the missing index ranges `[first, last]`;
    `footage_size` and `footage_sha256` (hex) those of the chunks'
    plaintexts joined. Raises `ValueError` for a value JSON cannot carry."""
    return canonical_json({
        "format": MANIFEST_FORMAT,
        "version": version,
        "previous_manifest_sha256": previous_sha256,
        "recording_id": recording_id,
        "device_id": device_id,
        "content_type": content_type,
        "state": state,
        "started_at": started_at,
        "first_received_at": first_received_at,
        "last_received_at": last_received_at,
        "finalized_at": finalized_at,
        "final_index": final_index,
        "chunks": [
            {
                "index": chunk.index,
                "size": chunk.size,
                "sha256": chunk.sha256,
                "ciphertext_size": chunk.ciphertext_size,
                "ciphertext_sha256": chunk.ciphertext_sha256,
                "received_at": chunk.received_at,
                "captured_at": chunk.captured_at,
                "device_signature": chunk.device_signature,
            }
            for chunk in chunks
        ],
        "gaps": gaps,
        "footage": {"size": footage_size, "sha256": footage_sha256},
        "merkle_root": merkle_root([bytes.fromhex(chunk.sha256) for chunk in chunks]).hex(),
        "signing_key_id": signing_key_id,
    })


def read_manifest(raw: bytes, version: int, what: str) -> dict:
    """Manifest `version` from its exact bytes, as a dict of the fields
    above. `what` names the file in messages. Raises `MalformedEvidence`
    unless `raw` is canonical JSON of a `witness-manifest/1` manifest of that
    version. It does not check the signature: verify that first."""
    manifest = read_canonical_object(raw, what)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != version:
        raise MalformedEvidence(f"manifest version {version} is not a {MANIFEST_FORMAT} manifest of that version")
    return manifest
