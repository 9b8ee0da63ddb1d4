"""The RFC 9162 Merkle tree of a transparency log, over stored hashes.

Hashing is RFC 9162 section 2.1.1 (the same as RFC 6962 section 2.1): a
leaf hashes to SHA-256(0x00 || data), an interior node to
SHA-256(0x01 || left || right), the empty tree to SHA-256("").

A log never holds its whole tree in memory. It stores, once and for ever,
the hash of every *complete* subtree: the subtree at `(level, index)` covers
leaves `index * 2**level` up to `(index + 1) * 2**level`, and its hash is
known as soon as its last leaf is appended. This is the storage of Go's
golang.org/x/mod/sumdb/tlog and of C2SP tlog-tiles (whose tiles are rows of
these hashes); `stored_hash_index` gives the same dense linear order as
Go's `StoredHashIndex`, for a store that wants one integer key.

- `stored_hashes_for_leaf` says what to persist when leaf n is appended
  (Go's `StoredHashes`), so a database can write them in the same
  transaction as the leaf.
- `tree_hash`, `prove_inclusion` and `prove_consistency` (Go's `TreeHash`,
  `ProveRecord`, `ProveTree`; RFC 9162 sections 2.1.3.1 and 2.1.4.1) read
  the stored hashes they need through a `HashReader`, in one call.
- `check_inclusion` and `check_consistency` are the verification algorithms
  of RFC 9162 sections 2.1.3.2 and 2.1.4.2, word for word, so they share no
  code with the generation they check.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterator, NamedTuple, Sequence

from .. import InvalidEvidence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

# Given (level, index) coordinates of complete subtrees, return their stored
# hashes in the same order. One call per operation, so a database answers it
# with one query.
HashReader = Callable[[Sequence[tuple[int, int]]], Sequence[bytes]]


class StoredHash(NamedTuple):
    """A complete subtree's hash, to be persisted at `(level, index)`."""

    level: int
    index: int
    hash: bytes


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def stored_hash_index(level: int, index: int) -> int:
    """The position of subtree `(level, index)` in the dense order in which
    hashes are appended (Go's `StoredHashIndex`; Crosby and Wallach, section
    3.3). Raises `ValueError` for negative coordinates."""
    if level < 0 or index < 0:
        raise ValueError("tlog: negative subtree coordinates")
    # Level L's n-th hash comes right after level L+1's (2n+1)-th; walk down
    # to level 0, where the n-th leaf is preceded by n + n/2 + n/4 + ... hashes.
    for _ in range(level):
        index = 2 * index + 1
    position = 0
    while index > 0:
        position += index
        index >>= 1
    return position + level


def split_stored_hash_index(position: int) -> tuple[int, int]:
    """The inverse of `stored_hash_index`: `(level, index)` of the hash stored
    at `position`. Raises `ValueError` for a negative position."""
    if position < 0:
        raise ValueError("tlog: negative stored hash index")
    # stored_hash_index(0, n) <= position < stored_hash_index(0, n + 1) for the
    # leaf n whose append wrote this hash; start below it and walk up.
    n = position // 2
    while stored_hash_index(0, n) > position:
        n -= 1
    while stored_hash_index(0, n + 1) <= position:
        n += 1
    level = position - stored_hash_index(0, n)
    return level, n >> level


def stored_hash_count(size: int) -> int:
    """How many hashes a tree of `size` leaves has stored."""
    if size < 0:
        raise ValueError("tlog: negative tree size")
    if size == 0:
        return 0
    return stored_hash_index(0, size - 1) + 1 + _trailing_ones(size - 1)


def stored_hashes_for_leaf(n: int, leaf: bytes, read: HashReader) -> list[StoredHash]:
    """The hashes to persist when appending leaf `n` (0-based) whose leaf hash
    is `leaf`: the leaf hash itself, then one hash per subtree it completes
    (at most 1 + log2 n; under two on average). Reads the left siblings it
    needs (tree size n) through `read`. Raises `ValueError` for a negative n,
    a leaf hash that is not 32 bytes, or a reader that answers wrongly."""
    if n < 0:
        raise ValueError("tlog: negative leaf index")
    _check_hash(leaf)
    completed = _trailing_ones(n)
    siblings = _read(read, [(level, (n >> level) - 1) for level in range(completed)])
    stored = [StoredHash(0, n, leaf)]
    h = leaf
    for level, sibling in enumerate(siblings):
        h = node_hash(sibling, h)
        stored.append(StoredHash(level + 1, n >> (level + 1), h))
    return stored


def tree_hash(size: int, read: HashReader) -> bytes:
    """The root hash of the tree of the first `size` leaves (RFC 9162 MTH),
    from at most 1 + log2 size stored hashes. Raises `ValueError` for a
    negative size or a reader that answers wrongly."""
    if size < 0:
        raise ValueError("tlog: negative tree size")
    if size == 0:
        return EMPTY_ROOT
    need: list[tuple[int, int]] = []
    _subtree_coordinates(0, size, need)
    hashes = _Consumer(_read(read, need))
    root = _subtree_hash(0, size, hashes)
    hashes.done()
    return root


def prove_inclusion(size: int, index: int, read: HashReader) -> list[bytes]:
    """The RFC 9162 inclusion proof (section 2.1.3.1, PATH) that leaf `index`
    is in the tree of `size` leaves, nearest the leaf first. Raises
    `ValueError` unless 0 <= index < size, or if the reader answers wrongly."""
    if not 0 <= index < size:
        raise ValueError("tlog: leaf index outside the tree")
    need: list[tuple[int, int]] = []
    _inclusion_coordinates(0, size, index, need)
    hashes = _Consumer(_read(read, need))
    proof = _inclusion_path(0, size, index, hashes)
    hashes.done()
    return proof


def prove_consistency(old_size: int, new_size: int, read: HashReader) -> list[bytes]:
    """The RFC 9162 consistency proof (section 2.1.4.1, PROOF) that the tree
    of `new_size` leaves extends the tree of `old_size`. Empty when the sizes
    are equal. Raises `ValueError` unless 1 <= old_size <= new_size (a proof
    from the empty tree means nothing, so none is made), or if the reader
    answers wrongly."""
    if not 1 <= old_size <= new_size:
        raise ValueError("tlog: consistency needs 1 <= old size <= new size")
    need: list[tuple[int, int]] = []
    _consistency_coordinates(0, new_size, old_size, need)
    hashes = _Consumer(_read(read, need))
    proof = _consistency_path(0, new_size, old_size, hashes)
    hashes.done()
    return proof


def check_inclusion(leaf: bytes, index: int, size: int, root: bytes, proof: Sequence[bytes]) -> None:
    """Raise `InvalidEvidence` unless `proof` shows that the leaf hash `leaf`
    is leaf `index` of the tree of `size` leaves whose root is `root`
    (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size or not _all_hashes([leaf, root, *proof]):
        raise InvalidEvidence()
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise InvalidEvidence()
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise InvalidEvidence()


def check_consistency(
    old_size: int, old_root: bytes, new_size: int, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise `InvalidEvidence` unless `proof` shows that the tree of
    `new_size` leaves with root `new_root` extends the tree of `old_size`
    leaves with root `old_root` (RFC 9162 section 2.1.4.2). Equal sizes need
    an empty proof and equal roots; an empty old tree is refused, as the
    proof would mean nothing."""
    if not 1 <= old_size <= new_size or not _all_hashes([old_root, new_root, *proof]):
        raise InvalidEvidence()
    if old_size == new_size:
        if proof or old_root != new_root:
            raise InvalidEvidence()
        return
    # 1. An empty proof cannot show anything between different sizes.
    if not proof:
        raise InvalidEvidence()
    path = list(proof)
    # 2. A complete old tree is itself the first node of the path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3-4.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            raise InvalidEvidence()
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if fr != old_root or sr != new_root or sn != 0:
        raise InvalidEvidence()


# Generation follows Go's tlog: each proof is computed twice over the same
# recursion, first to list the stored hashes it needs (one read), then to
# consume them in that order.


class _Consumer:
    def __init__(self, hashes: Sequence[bytes]) -> None:
        self._hashes: Iterator[bytes] = iter(hashes)

    def next(self) -> bytes:
        return next(self._hashes)

    def done(self) -> None:
        if next(self._hashes, None) is not None:
            raise AssertionError("tlog: bad index math")  # a bug here, not in the caller


def _read(read: HashReader, need: list[tuple[int, int]]) -> list[bytes]:
    if not need:
        return []
    hashes = list(read(need))
    if len(hashes) != len(need):
        raise ValueError(f"tlog: asked for {len(need)} stored hashes, got {len(hashes)}")
    for h in hashes:
        _check_hash(h)
    return hashes


def _check_hash(h: bytes) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ValueError("tlog: a hash is 32 bytes")


def _all_hashes(values: Sequence[bytes]) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in values)


def _trailing_ones(n: int) -> int:
    return ((n + 1) & -(n + 1)).bit_length() - 1


def _split(n: int) -> int:
    """RFC 9162's k: the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_coordinates(lo: int, hi: int, need: list[tuple[int, int]]) -> None:
    # [lo, hi) is a run of complete subtrees, largest first.
    while lo < hi:
        k = 1 << ((hi - lo).bit_length() - 1)
        level = k.bit_length() - 1
        assert lo % k == 0, "tlog: bad math in subtree coordinates"
        need.append((level, lo >> level))
        lo += k


def _subtree_hash(lo: int, hi: int, hashes: _Consumer) -> bytes:
    parts = []
    while lo < hi:
        parts.append(hashes.next())
        lo += 1 << ((hi - lo).bit_length() - 1)
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


def _inclusion_coordinates(lo: int, hi: int, n: int, need: list[tuple[int, int]]) -> None:
    if hi - lo == 1:
        return
    k = _split(hi - lo)
    if n < lo + k:
        _inclusion_coordinates(lo, lo + k, n, need)
        _subtree_coordinates(lo + k, hi, need)
    else:
        _subtree_coordinates(lo, lo + k, need)
        _inclusion_coordinates(lo + k, hi, n, need)


def _inclusion_path(lo: int, hi: int, n: int, hashes: _Consumer) -> list[bytes]:
    if hi - lo == 1:
        return []  # the verifier has the leaf hash
    k = _split(hi - lo)
    if n < lo + k:
        path = _inclusion_path(lo, lo + k, n, hashes)
        other = _subtree_hash(lo + k, hi, hashes)
    else:
        other = _subtree_hash(lo, lo + k, hashes)
        path = _inclusion_path(lo + k, hi, n, hashes)
    return path + [other]


def _consistency_coordinates(lo: int, hi: int, m: int, need: list[tuple[int, int]]) -> None:
    if m == hi:
        if lo != 0:
            _subtree_coordinates(lo, hi, need)
        return
    k = _split(hi - lo)
    if m <= lo + k:
        _consistency_coordinates(lo, lo + k, m, need)
        _subtree_coordinates(lo + k, hi, need)
    else:
        _subtree_coordinates(lo, lo + k, need)
        _consistency_coordinates(lo + k, hi, m, need)


def _consistency_path(lo: int, hi: int, m: int, hashes: _Consumer) -> list[bytes]:
    # RFC 9162 SUBPROOF(m, D[lo:hi], b) with b true exactly while lo == 0.
    if m == hi:
        if lo == 0:
            return []  # the verifier has the old root
        return [_subtree_hash(lo, hi, hashes)]
    k = _split(hi - lo)
    if m <= lo + k:
        path = _consistency_path(lo, lo + k, m, hashes)
        other = _subtree_hash(lo + k, hi, hashes)
    else:
        other = _subtree_hash(lo, lo + k, hashes)
        path = _consistency_path(lo + k, hi, m, hashes)
    return path + [other]
