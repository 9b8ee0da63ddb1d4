"""C2SP transparency-log checkpoints (c2sp.org/tlog-checkpoint): the note
text naming a tree head.

    <origin>
    <tree size, decimal, no leading zeroes>
    <root hash, base64>
    [<extension line>...]

signed as a signed note (`crypto.tlog.note`) by the log's key, whose name
should be the origin. The parsing rules are those of the spec and of
Filippo Valsorda's torchwood `ParseCheckpoint` (which extends Go's
`tlog.ParseTree`), including its 1 MB limit.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Sequence

from .. import InvalidEvidence
from . import Malformed
from .merkle import HASH_SIZE
from .note import NoteSigner, NoteVerifier, OpenedNote, Signature, open_note, sign_note

MAX_CHECKPOINT_SIZE = 1_000_000


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and root hash, and any
    extension lines (opaque, each non-empty, without their newline)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (not self.origin or "\n" in self.origin or self.size < 0 or len(self.root_hash) != HASH_SIZE
                or any(not line or "\n" in line for line in self.extensions)
                or any(c < " " for c in self.origin + "".join(self.extensions))):
            raise ValueError("tlog: not a checkpoint (origin, size >= 0, 32-byte root, non-empty extension lines)")

    def body(self) -> str:
        """The note text: each line ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose note verified against the log's keys."""

    checkpoint: Checkpoint
    note: OpenedNote


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint in a note text (signature lines excluded). Raises
    `Malformed` unless it is at least three lines, each ending in a newline,
    with a decimal size without leading zeroes, a base64 32-byte root hash,
    and non-empty extension lines."""
    if len(text) > MAX_CHECKPOINT_SIZE or not text.endswith("\n"):
        raise Malformed()
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise Malformed()
    origin, size_text, hash_text, *extensions = lines
    if not size_text.isascii() or not size_text.isdigit() or str(int(size_text)) != size_text:
        raise Malformed()
    try:
        root = base64.b64decode(hash_text, validate=True)
    except binascii.Error as exc:
        raise Malformed() from exc
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != hash_text:
        raise Malformed()
    try:
        return Checkpoint(origin, int(size_text), root, tuple(extensions))
    except ValueError as exc:
        raise Malformed() from exc


def sign_checkpoint(checkpoint: Checkpoint, *signers: NoteSigner, signatures: Sequence[Signature] = ()) -> str:
    """The signed checkpoint note (see `note.sign_note`)."""
    return sign_note(checkpoint.body(), *signers, signatures=signatures)


def open_checkpoint(message: str | bytes, origin: str, verifiers: Sequence[NoteVerifier]) -> SignedCheckpoint:
    """Open a signed checkpoint of the log `origin`:

    1. the note opens against `verifiers` (`note.open_note`: unknown keys
       ignored, known keys must verify, at least one does);
    2. its text is a checkpoint (`Malformed` if not);
    3. its origin line is `origin` (`InvalidEvidence` if not: a good
       signature over another log's head proves nothing about this one).
    """
    opened = open_note(message, verifiers)
    checkpoint = parse_checkpoint(opened.text)
    if checkpoint.origin != origin:
        raise InvalidEvidence()
    return SignedCheckpoint(checkpoint, opened)
