"""Hashes, the RFC 6962 Merkle tree hash, and canonical JSON."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """The exact bytes that are signed: keys sorted, no insignificant
    whitespace, UTF-8. Raises `ValueError` for floats that are not finite."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 section 2.1 Merkle Tree Hash over `leaves` (each the 32-byte
    SHA-256 digest of a chunk's plaintext, in index order).

    leaf = SHA-256(0x00 || d), node = SHA-256(0x01 || left || right), and the
    empty tree hashes to SHA-256(""). The split point is the largest power of
    two smaller than n, as the RFC requires (not a balanced pairing).
    """
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]
    return _subtree(level, 0, len(level))


def _subtree(hashed: list[bytes], start: int, end: int) -> bytes:
    n = end - start
    if n == 1:
        return hashed[start]
    k = 1 << ((n - 1).bit_length() - 1)
    left = _subtree(hashed, start, start + k)
    right = _subtree(hashed, start + k, end)
    return hashlib.sha256(b"\x01" + left + right).digest()
