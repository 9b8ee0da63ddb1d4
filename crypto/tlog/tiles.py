"""The C2SP tlog-tiles layout of a log's Merkle tree (c2sp.org/tlog-tiles,
"Merkle Tree" and "Log entries").

A tile is a row of up to 256 consecutive stored hashes at tree level
`8 * L`: tile N at level L holds the hashes of the complete subtrees
`(8 * L, N * 256 + i)` (`crypto.tlog.merkle` coordinates), so level 0 holds
leaf hashes and each hash at level L is the root of a full tile at level
L - 1. A tile of fewer than 256 hashes is partial and its path says its
width: `tile/<L>/<N>[.p/<W>]`, N written in 3-digit path elements of which
all but the last begin with `x` (`tile/0/x001/x234/067`). Entry bundles,
`tile/entries/<N>[.p/<W>]`, hold the leaves of level-0 tile N, each as a
big-endian uint16 length and the entry's bytes.

This is Go's golang.org/x/mod/sumdb/tlog tiling with height 8, without the
height in the path (C2SP drops it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from . import Malformed
from .merkle import HASH_SIZE, HashReader, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes, 8,192 bytes in a full tile
MAX_ENTRY_SIZE = 0xFFFF

_PATH = re.compile(r"tile/(0|[1-9][0-9]?|entries)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


@dataclass(frozen=True, order=True)
class Tile:
    """Tile `index` at tile level `level`, `width` hashes wide (256: full)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= 63 or self.index < 0 or not 1 <= self.width <= TILE_WIDTH:
            raise ValueError(f"tlog: no such tile {self.level}/{self.index} width {self.width}")

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    def path(self) -> str:
        """`tile/<L>/<N>[.p/<W>]`."""
        return f"tile/{self.level}/{_index_path(self.index)}{self._partial()}"

    def entries_path(self) -> str:
        """`tile/entries/<N>[.p/<W>]`: the bundle of this level-0 tile's
        entries. Raises `ValueError` for a tile above level 0."""
        if self.level != 0:
            raise ValueError("tlog: only level-0 tiles have entry bundles")
        return f"tile/entries/{_index_path(self.index)}{self._partial()}"

    def _partial(self) -> str:
        return "" if self.full else f".p/{self.width}"


def parse_tile_path(path: str) -> Tile:
    """The tile at `tile/<L>/<N>[.p/<W>]`. Raises `Malformed` for anything
    else, entry bundles included, and for paths that are not written exactly
    as `Tile.path` writes them (no leading zeroes, no empty tiles)."""
    tile, entries = _parse(path)
    if entries:
        raise Malformed()
    return tile


def parse_entries_path(path: str) -> Tile:
    """The level-0 tile whose entries `tile/entries/<N>[.p/<W>]` holds.
    Raises `Malformed` for anything else."""
    tile, entries = _parse(path)
    if not entries:
        raise Malformed()
    return tile


def tiles_for_size(size: int, old_size: int = 0) -> list[Tile]:
    """The tiles a tree of `size` leaves has that a tree of `old_size` did
    not (every tile when `old_size` is 0): what to publish on growing from
    one to the other, lowest level first. Go's `NewTiles` with height 8.
    Raises `ValueError` unless 0 <= old_size <= size."""
    if not 0 <= old_size <= size:
        raise ValueError("tlog: tiles need 0 <= old size <= size")
    tiles: list[Tile] = []
    level = 0
    while size >> (TILE_HEIGHT * level) > 0:
        old_n = old_size >> (TILE_HEIGHT * level)
        new_n = size >> (TILE_HEIGHT * level)
        if old_n != new_n:
            for index in range(old_n >> TILE_HEIGHT, new_n >> TILE_HEIGHT):
                tiles.append(Tile(level, index))
            index = new_n >> TILE_HEIGHT
            width = new_n - (index << TILE_HEIGHT)
            if width > 0:
                tiles.append(Tile(level, index, width))
        level += 1
    return tiles


def tile_bytes(tile: Tile, read: HashReader) -> bytes:
    """The bytes served for `tile`: its `width` stored hashes, concatenated,
    read in one call. Raises `ValueError` if the reader answers wrongly."""
    start = tile.index << TILE_HEIGHT
    need = [(TILE_HEIGHT * tile.level, start + i) for i in range(tile.width)]
    hashes = list(read(need))
    if len(hashes) != len(need) or any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError("tlog: the reader did not return one 32-byte hash per coordinate")
    return b"".join(hashes)


def hash_reader_from_tiles(size: int, read_tile: Callable[[Tile], bytes]) -> HashReader:
    """A `HashReader` over the tiles of a tree of `size` leaves, fetched with
    `read_tile` (from a mirror, a bundle, a directory), so that proofs can be
    made from the published tiles alone. Hashes inside a tile's 8 levels are
    recomputed from its row. Nothing is authenticated here: check what you
    prove from it against a signed checkpoint. The reader raises `Malformed`
    for a tile of the wrong length and `ValueError` for a subtree that is not
    complete in a tree of `size`."""

    def read(coordinates: Sequence[tuple[int, int]]) -> list[bytes]:
        fetched: dict[Tile, bytes] = {}
        out = []
        for level, index in coordinates:
            if level < 0 or index < 0 or (index + 1) << level > size:
                raise ValueError(f"tlog: subtree ({level}, {index}) is not complete at size {size}")
            tile_level, inner = divmod(level, TILE_HEIGHT)
            first = index << inner  # position of its first hash in the tile level's row
            row = size >> (TILE_HEIGHT * tile_level)
            tile_index = first >> TILE_HEIGHT
            tile = Tile(tile_level, tile_index, min(TILE_WIDTH, row - (tile_index << TILE_HEIGHT)))
            if tile not in fetched:
                data = read_tile(tile)
                if len(data) != tile.width * HASH_SIZE:
                    raise Malformed()
                fetched[tile] = data
            offset = first - (tile_index << TILE_HEIGHT)
            out.append(_row_hash(fetched[tile][offset * HASH_SIZE:(offset + (1 << inner)) * HASH_SIZE]))
        return out

    return read


def entry_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its
    bytes. Raises `ValueError` for more than 256 entries or an entry longer
    than 65,535 bytes."""
    if len(entries) > TILE_WIDTH or any(len(e) > MAX_ENTRY_SIZE for e in entries):
        raise ValueError("tlog: an entry bundle holds at most 256 entries of at most 65,535 bytes")
    return b"".join(len(e).to_bytes(2, "big") + e for e in entries)


def read_entry_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    """The entries of a bundle, in order. Raises `Malformed` if the bundle is
    truncated, holds more than 256 entries, or (given `width`, the tile's)
    holds a different number of entries."""
    entries = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise Malformed()
        length = int.from_bytes(data[at:at + 2], "big")
        if at + 2 + length > len(data):
            raise Malformed()
        entries.append(data[at + 2:at + 2 + length])
        at += 2 + length
    if len(entries) > TILE_WIDTH or (width is not None and len(entries) != width):
        raise Malformed()
    return entries


def _index_path(n: int) -> str:
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n > 0:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def _parse(path: str) -> tuple[Tile, bool]:
    match = _PATH.fullmatch(path)
    if not match:
        raise Malformed()
    level_text, index_text, width_text = match.groups()
    index = 0
    for part in index_text.split("/"):
        index = index * 1000 + int(part.removeprefix("x"))
    width = int(width_text) if width_text else TILE_WIDTH
    entries = level_text == "entries"
    if (width_text and width >= TILE_WIDTH) or (not entries and int(level_text) > 63):
        raise Malformed()
    tile = Tile(0 if entries else int(level_text), index, width)
    # One tile, one path: refuse x-elements with leading zero groups.
    if (tile.entries_path() if entries else tile.path()) != path:
        raise Malformed()
    return tile, entries


def _row_hash(row: bytes) -> bytes:
    # The root of the complete subtree whose 2**k hashes are `row`.
    if len(row) == HASH_SIZE:
        return row
    half = len(row) // 2
    return node_hash(_row_hash(row[:half]), _row_hash(row[half:]))
