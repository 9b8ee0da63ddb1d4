"""Ed25519 signatures: the server's manifest signatures and the optional
per-device chunk signatures of PROTOCOL.md."""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from . import InvalidEvidence


def public_key_pem(key: Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of an Ed25519 public key (what openssl reads)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def signing_key_id(key: Ed25519PublicKey) -> str:
    """The short stable id manifests and copies name a signing key by:
    `ed25519-` and the first 16 hex digits of SHA-256(raw public key)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def load_device_public_key(pem: str) -> Ed25519PublicKey:
    """Parse a device's Ed25519 public key in PEM. Raises `InvalidEvidence` for
    anything that is not exactly one Ed25519 public key."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise InvalidEvidence() from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidEvidence()
    return key


def chunk_signature_message(recording_id: str, index: int, ciphertext_sha256_hex: str) -> bytes:
    """What a device signs for chunk `index`: the ASCII string
    `witness/v1 chunk-sig <recording_id> <index> <hex sha256 of the body>`."""
    return f"witness/v1 chunk-sig {recording_id} {index} {ciphertext_sha256_hex}".encode("ascii")


def sign_chunk(
    key: Ed25519PrivateKey, recording_id: str, index: int, ciphertext_sha256_hex: str
) -> bytes:
    """A device's signature over chunk `index` (used by the reference client)."""
    return key.sign(chunk_signature_message(recording_id, index, ciphertext_sha256_hex))


def verify_chunk_signature(
    key: Ed25519PublicKey,
    signature: bytes,
    recording_id: str,
    index: int,
    ciphertext_sha256_hex: str,
) -> None:
    """Raise `InvalidEvidence` unless `signature` is the device's signature
    over chunk `index` with that body hash."""
    verify_signature(key, signature, chunk_signature_message(recording_id, index, ciphertext_sha256_hex))


def verify_signature(key: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    """Raise `InvalidEvidence` unless `signature` is `key`'s over `message`."""
    try:
        key.verify(signature, message)
    except InvalidSignature as exc:
        raise InvalidEvidence() from exc
