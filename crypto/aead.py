"""Content keys sealed with HPKE, and chunk encryption with AES-256-GCM,
exactly as PROTOCOL.md ("Recordings", "Chunks") defines them."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import InvalidEvidence

HPKE_SUITE_NAME = "X25519-HKDF-SHA256-AES-256-GCM"
CONTENT_KEY_BYTES = 32
SEALED_KEY_BYTES = 80  # enc (32) + AES-GCM(32-byte key) (48)
TAG_BYTES = 16

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def new_content_key() -> bytes:
    """Return a fresh random 32-byte content key for one recording."""
    return os.urandom(CONTENT_KEY_BYTES)


def _key_info(recording_id: str) -> bytes:
    return f"witness/v1 recording-key {recording_id}".encode("ascii")


def seal_content_key(
    public_key: X25519PublicKey, recording_id: str, content_key: bytes
) -> bytes:
    """Seal `content_key` to the server's HPKE key, bound to `recording_id`.

    Returns `enc || ciphertext` (80 bytes for a 32-byte key).
    """
    return _SUITE.encrypt(content_key, public_key, info=_key_info(recording_id))


def open_content_key(
    private_key: X25519PrivateKey, recording_id: str, sealed: bytes
) -> bytes:
    """Open a sealed content key. Raises `InvalidEvidence` if it was not sealed
    to this key for this recording, or is not a 32-byte key."""
    if len(sealed) != SEALED_KEY_BYTES:
        raise InvalidEvidence()
    try:
        key = _SUITE.decrypt(sealed, private_key, info=_key_info(recording_id))
    except (InvalidTag, ValueError) as exc:
        raise InvalidEvidence() from exc
    if len(key) != CONTENT_KEY_BYTES:
        raise InvalidEvidence()
    return key


def chunk_nonce(index: int) -> bytes:
    """Nonce of chunk `index`: 4 zero bytes then the index, 8-byte big-endian."""
    return b"\x00\x00\x00\x00" + index.to_bytes(8, "big")


def chunk_aad(recording_id: str, index: int, final: bool) -> bytes:
    """Associated data binding a chunk to its recording, place and finality."""
    tail = "final" if final else "more"
    return f"witness/v1 chunk {recording_id} {index} {tail}".encode("ascii")


def encrypt_chunk(
    content_key: bytes, recording_id: str, index: int, plaintext: bytes, *, final: bool
) -> bytes:
    """Encrypt one piece of a recording as chunk `index`."""
    return AESGCM(content_key).encrypt(
        chunk_nonce(index), plaintext, chunk_aad(recording_id, index, final)
    )


def decrypt_chunk(
    content_key: bytes, recording_id: str, index: int, ciphertext: bytes, *, final: bool
) -> bytes:
    """Decrypt chunk `index`. Raises `InvalidEvidence` when the tag does not
    verify under this key, nonce and AAD (wrong key, index, recording or
    finality, or altered bytes)."""
    if len(ciphertext) < TAG_BYTES:
        raise InvalidEvidence()
    try:
        return AESGCM(content_key).decrypt(
            chunk_nonce(index), ciphertext, chunk_aad(recording_id, index, final)
        )
    except InvalidTag as exc:
        raise InvalidEvidence() from exc
