"""C2SP tlog-tiles: paths and tile sets as the spec's own examples give
them, Go tlog's path cases without the height element, tile bytes from the
CT test tree's published hashes, and proofs made from tiles alone."""

import pytest

from crypto.tlog import Malformed
from crypto.tlog.merkle import node_hash, prove_consistency, prove_inclusion, tree_hash
from crypto.tlog.tiles import (
    Tile,
    entry_bundle,
    hash_reader_from_tiles,
    parse_entries_path,
    parse_tile_path,
    read_entry_bundle,
    tile_bytes,
    tiles_for_size,
)

from .test_tlog_merkle import CT_LEAVES, CT_NODES, Store, grown


@pytest.mark.parametrize("path, tile", [
    ("tile/0/x001/x234/067", Tile(0, 1234067)),  # the spec's index example
    ("tile/0/x001/x234/067.p/1", Tile(0, 1234067, 1)),
    ("tile/5/x123/x456/078.p/2", Tile(5, 123456078, 2)),  # Go tlog's cases, height dropped
    ("tile/0/x003/x057/500", Tile(0, 3057500)),
    ("tile/0/000", Tile(0, 0)),
    ("tile/63/999.p/255", Tile(63, 999, 255)),
])
def test_tile_paths(path, tile):
    assert tile.path() == path
    assert parse_tile_path(path) == tile


def test_entry_bundle_paths_name_the_level_0_tile():
    assert Tile(0, 1234067, 7).entries_path() == "tile/entries/x001/x234/067.p/7"
    assert parse_entries_path("tile/entries/x001/000") == Tile(0, 1000)
    with pytest.raises(ValueError):
        Tile(1, 0).entries_path()


@pytest.mark.parametrize("path", [
    "tile/0/123/456/078", "tile/0/-01", "tile/0/x000/001", "tile/0/1", "tile/00/000", "tile/64/000",
    "tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/07", "tile/8/0/000", "tile/entries/000", "tile/x/000",
    "tile/0/000/", "/tile/0/000",
])
def test_paths_not_written_as_the_spec_writes_them_are_refused(path):
    with pytest.raises(Malformed):
        parse_tile_path(path)


def test_the_spec_examples_of_which_tiles_a_tree_has():
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one
    # partial level 0 tile of width 112, one full level 1 tile, one partial
    # level 1 tile of width 17, and one partial level 2 tile of width 1"
    tiles = tiles_for_size(70_000)
    assert tiles == [Tile(0, n) for n in range(273)] + [Tile(0, 273, 112), Tile(1, 0), Tile(1, 1, 17), Tile(2, 0, 1)]
    # "a tree of size 256 will be represented by a full level 0 tile and a
    # partial level 1 tile of width 1"
    assert tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_for_size(0) == []


def test_growing_publishes_only_the_tiles_that_changed():
    assert tiles_for_size(70_000, 69_999) == [Tile(0, 273, 112)]
    assert tiles_for_size(65_536, 65_535) == [Tile(0, 255), Tile(1, 0), Tile(2, 0, 1)]
    assert tiles_for_size(300, 300) == []


def test_a_level_0_tile_is_the_leaf_hashes_in_order():
    store = grown(CT_LEAVES)
    assert tile_bytes(Tile(0, 0, 8), store.read) == b"".join(bytes.fromhex(h) for h in CT_NODES[0])
    assert tile_bytes(Tile(0, 0, 3), store.read) == b"".join(bytes.fromhex(h) for h in CT_NODES[0][:3])


def test_a_level_1_hash_is_the_root_of_a_full_level_0_tile():
    store = Store()
    for i in range(256 * 2 + 5):
        store.append(i.to_bytes(2, "big"))
    level1 = tile_bytes(Tile(1, 0, 2), store.read)
    assert level1[:32] == tree_hash(256, store.read)
    assert tree_hash(512, store.read) == node_hash(level1[:32], level1[32:])


def test_proofs_from_tiles_alone_equal_proofs_from_the_store():
    size = 70_000
    store = Store()
    for i in range(size):
        store.append(i.to_bytes(4, "big"))
    tiles = {tile: tile_bytes(tile, store.read) for tile in tiles_for_size(size)}
    fetched = []

    def read_tile(tile):
        fetched.append(tile)
        return tiles[tile]

    reader = hash_reader_from_tiles(size, read_tile)
    assert tree_hash(size, reader) == tree_hash(size, store.read)
    for index in (0, 255, 256, 65_535, 65_536, 69_999):
        assert prove_inclusion(size, index, reader) == prove_inclusion(size, index, store.read)
    for old in (1, 256, 300, 65_536, 69_999):
        assert prove_consistency(old, size, reader) == prove_consistency(old, size, store.read)
    assert set(fetched) <= set(tiles)


def test_tiles_of_the_wrong_length_are_refused():
    store = grown(CT_LEAVES)
    reader = hash_reader_from_tiles(8, lambda tile: tile_bytes(tile, store.read)[:-1])
    with pytest.raises(Malformed):
        tree_hash(8, reader)
    with pytest.raises(ValueError):
        hash_reader_from_tiles(8, lambda tile: b"")([(3, 1)])  # not complete at size 8


def test_entry_bundles_round_trip_with_uint16_lengths():
    entries = [b"", b"a", b"x" * 300]
    bundle = entry_bundle(entries)
    assert bundle == b"\x00\x00" + b"\x00\x01a" + b"\x01\x2c" + b"x" * 300
    assert read_entry_bundle(bundle, width=3) == entries
    for bad in (bundle[:-1], bundle + b"\x00"):
        with pytest.raises(Malformed):
            read_entry_bundle(bad)
    with pytest.raises(Malformed):
        read_entry_bundle(bundle, width=4)
    with pytest.raises(ValueError):
        entry_bundle([b"x" * 65_536])


def test_a_grown_tile_extends_the_partial_tile_before_it():
    # Tiles are immutable: each append's tiles extend the ones published at
    # the size before, and full tiles never change afterwards.
    store = Store()
    published = {}
    for n in range(600):
        store.append(n.to_bytes(2, "big"))
        for tile in tiles_for_size(n + 1, n):
            data = tile_bytes(tile, store.read)
            if tile.width > 1:
                assert data[:-32] == published[Tile(tile.level, tile.index, tile.width - 1)]
            published[tile] = data
    for tile, data in published.items():
        assert tile_bytes(tile, store.read) == data
