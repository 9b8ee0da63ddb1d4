"""C2SP timestamped Ed25519 checkpoint cosignatures, `cosignature/v1`
(c2sp.org/tlog-cosignature, "Format" and "Ed25519 signed message").

A witness (cosigner) states that, at a time it names, the checkpoint is the
largest consistent tree head it has seen for that log. The signed message is

    cosignature/v1\\n
    time <POSIX seconds, decimal, no leading zeroes>\\n
    <the whole checkpoint note text, extension lines included>

and the note signature is SHA-256(name || 0x0A || 0x04 || public key)[:4]
(the key ID) followed by `timestamped_signature`: the time as a big-endian
uint64 (at most 2**63 - 1) and the 64-byte Ed25519 signature. The time is
always passed in, never read from a clock here.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import Malformed
from .checkpoint import parse_checkpoint
from .note import Signature, key_id, parse_vkey, valid_key_name, vkey

COSIGNATURE_V1 = 0x04
MAX_TIMESTAMP = 2**63 - 1


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The exact bytes a `cosignature/v1` signs. Raises `ValueError` for a
    timestamp outside 0..2**63-1 and `Malformed` for a text that is not a
    checkpoint."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("tlog: a cosignature time is 0 to 2**63 - 1 seconds")
    parse_checkpoint(checkpoint_text)
    return f"cosignature/v1\ntime {timestamp}\n".encode("ascii") + checkpoint_text.encode("utf-8")


def cosignature_time(signature: Signature) -> int:
    """The POSIX time a cosignature states. Raises `Malformed` unless its
    signature bytes are 8 + 64 long with a time of at most 2**63 - 1. (Says
    nothing of whether it verifies.)"""
    if len(signature.signature) != 8 + 64:
        raise Malformed()
    timestamp = int.from_bytes(signature.signature[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise Malformed()
    return timestamp


class CosignatureVerifier:
    """Checks one witness's `cosignature/v1` signatures; usable as a note
    verifier in `note.open_note` and `checkpoint.open_checkpoint`."""

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if not valid_key_name(name):
            raise ValueError("tlog: a key name is non-empty, without spaces or '+'")
        self.name = name
        self.public_key = public_key
        self._raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = key_id(name, COSIGNATURE_V1, self._raw)

    @classmethod
    def from_vkey(cls, text: str) -> "CosignatureVerifier":
        """The verifier of a type 0x04 vkey. Raises `Malformed` otherwise."""
        name, _, signature_type, raw = parse_vkey(text)
        if signature_type != COSIGNATURE_V1 or len(raw) != 32:
            raise Malformed()
        return cls(name, Ed25519PublicKey.from_public_bytes(raw))

    @property
    def vkey(self) -> str:
        return vkey(self.name, COSIGNATURE_V1, self._raw)

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether `signature` (time || Ed25519 signature) is this witness's
        cosignature of the checkpoint note text `text`."""
        if len(signature) != 8 + 64:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        try:
            message = cosignature_message(text.decode("utf-8"), timestamp)
            self.public_key.verify(signature[8:], message)
        except (ValueError, Malformed, InvalidSignature):
            return False
        return True


class Cosigner:
    """A witness's key: makes `cosignature/v1` signature lines."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.verifier = CosignatureVerifier(name, private_key.public_key())
        self.name = name
        self.key_id = self.verifier.key_id
        self._key = private_key

    def cosign(self, checkpoint_text: str, timestamp: int) -> Signature:
        """The cosignature of a checkpoint note text at `timestamp` (POSIX
        seconds). `Signature.line()` is what a witness answers. Raises
        `ValueError` for a time outside 0..2**63-1 and `Malformed` for a text
        that is not a checkpoint."""
        signature = self._key.sign(cosignature_message(checkpoint_text, timestamp))
        return Signature(self.name, self.key_id, timestamp.to_bytes(8, "big") + signature)
