"""C2SP signed notes with Ed25519 signatures (c2sp.org/signed-note).

A signed note is a UTF-8 text ending in a newline, a blank line, and one or
more lines `— <key name> base64(key ID || signature)`. A key is known by its
name and its 4-byte key ID, SHA-256(name || 0x0A || type || public key)[:4];
Ed25519 note signatures are type 0x01 and sign the text itself. A verifier
key ("vkey") is written `<name>+<hex key ID>+base64(type || public key)`.

`open_note` follows the spec's rules: signatures from unknown keys are
ignored, a known key's signature must verify, and at least one must. This
follows Go's golang.org/x/mod/sumdb/note (`Open`, `Sign`, `NewVerifier`,
`NewSigner`), including its limit of 100 signatures per note.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Protocol, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import InvalidEvidence
from . import Malformed

ED25519 = 0x01
MAX_SIGNATURES = 100
_DASH = "\u2014 "
_HEX_ID = re.compile(r"[0-9a-fA-F]{8}")


class NoteSigner(Protocol):
    """What signs a note: a key name, its key ID, and a signature over the
    note text (without the key ID)."""

    name: str
    key_id: int

    def sign(self, text: bytes) -> bytes: ...


class NoteVerifier(Protocol):
    """What checks one key's note signatures."""

    name: str
    key_id: int

    def verify(self, text: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True)
class Signature:
    """One signature line: the key's name and ID and the signature bytes
    (after the key ID)."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """`— <name> base64(key ID || signature)` and a newline."""
        raw = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_DASH}{self.name} {base64.b64encode(raw).decode('ascii')}\n"


@dataclass(frozen=True)
class OpenedNote:
    """A note whose known signatures all verified (at least one did)."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def valid_key_name(name: str) -> bool:
    """A key name is non-empty and has no Unicode space and no plus."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, signature_type: int, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || signature type || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def parse_vkey(vkey: str) -> tuple[str, int, int, bytes]:
    """`(name, key ID, signature type, public key)` of a verifier key, its key
    ID checked against the rule above. Raises `Malformed` otherwise."""
    name, _, rest = vkey.partition("+")
    hex_id, _, encoded = rest.partition("+")
    raw, claimed = _decode_key(hex_id, encoded)
    if not valid_key_name(name) or len(raw) < 2 or key_id(name, raw[0], raw[1:]) != claimed:
        raise Malformed()
    return name, claimed, raw[0], raw[1:]


def vkey(name: str, signature_type: int, public_key: bytes) -> str:
    """The verifier key string of a key. Raises `ValueError` for a bad name."""
    if not valid_key_name(name):
        raise ValueError("tlog: a key name is non-empty, without spaces or '+'")
    encoded = base64.b64encode(bytes([signature_type]) + public_key).decode("ascii")
    return f"{name}+{key_id(name, signature_type, public_key):08x}+{encoded}"


class Ed25519Verifier:
    """Checks type 0x01 (plain Ed25519) note signatures of one key."""

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if not valid_key_name(name):
            raise ValueError("tlog: a key name is non-empty, without spaces or '+'")
        self.name = name
        self.public_key = public_key
        self._raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = key_id(name, ED25519, self._raw)

    @classmethod
    def from_vkey(cls, text: str) -> "Ed25519Verifier":
        """The verifier of a type 0x01 vkey. Raises `Malformed` for anything
        else."""
        name, _, signature_type, raw = parse_vkey(text)
        if signature_type != ED25519 or len(raw) != 32:
            raise Malformed()
        return cls(name, Ed25519PublicKey.from_public_bytes(raw))

    @property
    def vkey(self) -> str:
        return vkey(self.name, ED25519, self._raw)

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


class Ed25519Signer:
    """Signs notes with an Ed25519 key under a name (signature type 0x01)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.verifier = Ed25519Verifier(name, private_key.public_key())
        self.name = name
        self.key_id = self.verifier.key_id
        self._key = private_key

    @classmethod
    def from_skey(cls, skey: str) -> "Ed25519Signer":
        """The signer of a Go note signer key,
        `PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || 32-byte seed)`.
        Raises `Malformed` if it is not one, or its key ID does not match."""
        prefix, _, rest = skey.partition("+KEY+")
        name, _, rest = rest.partition("+")
        hex_id, _, encoded = rest.partition("+")
        raw, claimed = _decode_key(hex_id, encoded)
        if prefix != "PRIVATE" or not valid_key_name(name) or len(raw) != 33 or raw[0] != ED25519:
            raise Malformed()
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id != claimed:
            raise Malformed()
        return signer

    def sign(self, text: bytes) -> bytes:
        return self._key.sign(text)


def sign_note(text: str, *signers: NoteSigner, signatures: Sequence[Signature] = ()) -> str:
    """The signed note: `text`, a blank line, the lines of `signatures`
    already held (less any from the same keys as `signers`), then one new
    signature per signer. Raises `ValueError` if `text` is not a valid note
    text (UTF-8, ends in a newline, no other control characters) or a name is
    not a valid key name."""
    if not text.endswith("\n") or not _clean(text):
        raise ValueError("tlog: a note text ends in a newline and has no other control characters")
    message = text.encode("utf-8")
    fresh = []
    for signer in signers:
        if not valid_key_name(signer.name):
            raise ValueError("tlog: a key name is non-empty, without spaces or '+'")
        fresh.append(Signature(signer.name, signer.key_id, signer.sign(message)))
    replaced = {(s.name, s.key_id) for s in fresh}
    kept = [s for s in signatures if (s.name, s.key_id) not in replaced]
    for s in kept:
        if not valid_key_name(s.name):
            raise ValueError("tlog: a key name is non-empty, without spaces or '+'")
    return text + "\n" + "".join(s.line() for s in [*kept, *fresh])


def parse_note(message: str | bytes) -> tuple[str, list[Signature]]:
    """Split a signed note into its text and signature lines, checking only
    the syntax. Raises `Malformed` for a note that is not valid UTF-8, holds
    control characters other than newlines, has no blank line before its
    signatures, a bad signature line, or more than 100 signatures."""
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Malformed() from exc
    if not _clean(message):
        raise Malformed()
    split = message.rfind("\n\n")
    if split < 0:
        raise Malformed()
    text, block = message[:split + 1], message[split + 2:]
    if not block.endswith("\n"):
        raise Malformed()
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise Malformed()
    signatures = []
    for line in lines:
        if not line.startswith(_DASH):
            raise Malformed()
        name, _, encoded = line[len(_DASH):].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise Malformed() from exc
        if not valid_key_name(name) or len(raw) < 5:
            raise Malformed()
        signatures.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, signatures


def open_note(message: str | bytes, verifiers: Sequence[NoteVerifier]) -> OpenedNote:
    """Parse a signed note and check it against the keys one trusts.

    1. The note must parse (`parse_note`), else `Malformed`.
    2. A signature whose name and key ID match no verifier is set aside
       (unverified), as the spec requires.
    3. A signature from a known key must verify, else `InvalidEvidence`: the
       whole note is refused.
    4. At least one known key's signature must be present, else
       `InvalidEvidence`.

    Raises `ValueError` if two verifiers share a name and key ID.
    """
    known: dict[tuple[str, int], NoteVerifier] = {}
    for v in verifiers:
        if (v.name, v.key_id) in known:
            raise ValueError(f"tlog: two verifiers for {v.name}+{v.key_id:08x}")
        known[(v.name, v.key_id)] = v
    text, signatures = parse_note(message)
    body = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    for s in signatures:
        v = known.get((s.name, s.key_id))
        if v is None:
            if s not in unverified:
                unverified.append(s)
            continue
        if any((t.name, t.key_id) == (s.name, s.key_id) for t in verified):
            continue  # one verified signature per key is enough
        if not v.verify(body, s.signature):
            raise InvalidEvidence()
        verified.append(s)
    if not verified:
        raise InvalidEvidence()
    return OpenedNote(text, tuple(verified), tuple(unverified))


def _decode_key(hex_id: str, encoded: str) -> tuple[bytes, int]:
    # Exactly 8 hex digits and canonical base64: one key, one spelling.
    if not _HEX_ID.fullmatch(hex_id):
        raise Malformed()
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise Malformed() from exc
    if base64.b64encode(raw).decode("ascii") != encoded:
        raise Malformed()
    return raw, int(hex_id, 16)


def _clean(text: str) -> bool:
    return not any(c < " " and c != "\n" for c in text)
