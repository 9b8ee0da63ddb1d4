"""The bodies of C2SP tlog-witness `add-checkpoint` (c2sp.org/tlog-witness,
"add-checkpoint"); no HTTP here, only the bytes.

A request is an old size line `old <size>`, at most 63 consistency proof
lines (one base64 hash each), an empty line, then the signed checkpoint
note. A witness answers 200 with one or more cosignature lines, or 409 with
the size it last cosigned for the log as `<size>\\n` (Content-Type
`text/x.tlog.size`). Each line ends in a newline.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Sequence

from . import Malformed
from .merkle import HASH_SIZE
from .note import Signature, parse_note

MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class AddCheckpoint:
    """An `add-checkpoint` request: the size of the checkpoint the witness
    last cosigned (0 if none), the consistency proof from it, and the new
    signed checkpoint note (not yet opened)."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: str

    def body(self) -> bytes:
        """The request body. Raises `ValueError` for a negative old size, a
        proof of more than 63 hashes or of a hash that is not 32 bytes, or a
        proof from size 0 (the empty tree needs none)."""
        if self.old_size < 0 or len(self.proof) > MAX_PROOF_LINES or any(len(h) != HASH_SIZE for h in self.proof):
            raise ValueError("tlog: old size >= 0 and at most 63 32-byte proof hashes")
        if self.old_size == 0 and self.proof:
            raise ValueError("tlog: a proof from the empty tree is always empty")
        lines = [f"old {self.old_size}", *(base64.b64encode(h).decode("ascii") for h in self.proof), ""]
        return ("".join(line + "\n" for line in lines) + self.checkpoint).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Read an `add-checkpoint` request body. Raises `Malformed` (a 400) for
    a body that is not UTF-8, lacks the `old` line or the empty line, has a
    size with leading zeroes, more than 63 proof lines or one that is not a
    base64 32-byte hash. The checkpoint note itself is only split off: open
    it with `checkpoint.open_checkpoint`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed() from exc
    head, blank, checkpoint = text.partition("\n\n")
    if not blank:
        raise Malformed()
    old_line, *proof_lines = head.split("\n")
    keyword, _, size_text = old_line.partition(" ")
    if keyword != "old" or not _decimal(size_text) or len(proof_lines) > MAX_PROOF_LINES:
        raise Malformed()
    proof = tuple(_hash(line) for line in proof_lines)
    return AddCheckpoint(int(size_text), proof, checkpoint)


def cosignatures_body(signatures: Sequence[Signature]) -> bytes:
    """A 200 answer: the witness's cosignature lines. Raises `ValueError`
    for none."""
    if not signatures:
        raise ValueError("tlog: an answer carries at least one cosignature")
    return "".join(s.line() for s in signatures).encode("utf-8")


def parse_cosignatures_body(body: bytes) -> list[Signature]:
    """The signature lines of a 200 answer, unverified: add them to the
    checkpoint and open it with the witness keys one trusts (unknown ones are
    then ignored). Raises `Malformed` for anything but one or more
    well-formed signature lines."""
    if not body:
        raise Malformed()
    # A note with a one-line text is the same grammar as a signature block.
    _, signatures = parse_note(b"x\n\n" + body)
    return signatures


def conflict_body(size: int) -> bytes:
    """A 409 answer: the size of the latest checkpoint the witness cosigned."""
    if size < 0:
        raise ValueError("tlog: negative tree size")
    return f"{size}\n".encode("ascii")


def parse_conflict_body(body: bytes) -> int:
    """The size in a 409 answer. Raises `Malformed` unless it is one
    decimal number without leading zeroes and a newline."""
    text = body.decode("ascii", errors="replace")
    if not text.endswith("\n") or not _decimal(text[:-1]):
        raise Malformed()
    return int(text[:-1])


def _decimal(text: str) -> bool:
    return text.isascii() and text.isdigit() and str(int(text)) == text


def _hash(line: str) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except binascii.Error as exc:
        raise Malformed() from exc
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
        raise Malformed()
    return raw
