"""The transparency log (sync/domain/transparency.py): one leaf per audit
entry, in the entry's own transaction; checkpoints that open with the log's
key, and tiles and proofs that check against them with crypto/tlog alone."""

from __future__ import annotations

import hashlib

import pytest

from crypto.tlog.checkpoint import open_checkpoint
from crypto.tlog.merkle import check_consistency, check_inclusion, leaf_hash, prove_inclusion
from crypto.tlog.tiles import Tile, hash_reader_from_tiles, read_entry_bundle, tiles_for_size
from crypto.tsa import verify_time_stamp
from sync.domain import accounts, audit, transparency
from sync.errors import NotFound
from sync.evidence.custody import log_leaf


def entries(archive, count: int) -> list[dict]:
    made = []
    for n in range(count):
        with archive.database.transaction() as db:
            made.append(audit.append_entry(db, at=archive.now(), actor="operator", action="test.event",
                                           detail={"n": n}))
    return made


def test_every_entry_is_a_leaf_committing_to_its_hash(archive):
    accounts.register_device(archive)  # an entry of its own
    made = entries(archive, 5)
    for entry in made:
        index, salt = transparency.leaf_of_entry(archive, entry["id"])
        assert index == entry["log_index"]
        (row,) = archive.database.query("SELECT data FROM tlog_leaves WHERE idx = ?", [index])
        assert bytes(row["data"]) == log_leaf(salt, entry["sha256"])
    indexes = [e["log_index"] for e in made]
    assert indexes == list(range(indexes[0], indexes[0] + 5))
    # A transaction that rolls back leaves neither the entry nor its leaf.
    with pytest.raises(RuntimeError):
        with archive.database.transaction() as db:
            audit.append_entry(db, at=archive.now(), actor="operator", action="test.event")
            raise RuntimeError("rolled back")
    with archive.database.snapshot() as db:
        assert transparency.log_size(db) == indexes[-1] + 1


def test_checkpoints_tiles_and_proofs_verify_with_the_log_key_alone(archive):
    entries(archive, 300)  # more than one full tile
    first = transparency.make_checkpoint(archive)
    signer = transparency.log_signer(archive)
    opened = open_checkpoint(transparency.latest_checkpoint(archive), transparency.log_origin(archive),
                             [signer.verifier])
    assert opened.checkpoint.size == first.size >= 300 and opened.checkpoint.root_hash == first.root_hash
    facts = verify_time_stamp(first.tsr, hashlib.sha256(first.note.encode()).digest(),
                              archive.keys.tsa.chain_pem().encode())
    assert facts is not None

    # A mirror holding only the published tiles makes the same proofs.
    served = {}

    def read_tile(wanted: Tile) -> bytes:
        served[wanted] = transparency.tile(archive, wanted)
        return served[wanted]

    reader = hash_reader_from_tiles(first.size, read_tile)
    for index in (0, 255, 256, first.size - 1):
        leaves = read_entry_bundle(transparency.entry_bundle(archive, Tile(0, index // 256,
                                   min(256, first.size - index // 256 * 256))))
        leaf = leaf_hash(leaves[index % 256])
        proof = prove_inclusion(first.size, index, reader)
        check_inclusion(leaf, index, first.size, first.root_hash, proof)
        assert proof == transparency.inclusion_proof(archive, index, first.size)
    assert set(served) <= set(tiles_for_size(first.size))

    entries(archive, 20)
    second = transparency.make_checkpoint(archive)
    check_consistency(first.size, first.root_hash, second.size, second.root_hash,
                      transparency.consistency_proof(archive, first.size, second.size))
    assert transparency.checkpoint_at(archive, first.size)[0] == first.note


def test_nothing_past_the_newest_checkpoint_is_served(archive):
    entries(archive, 10)
    head = transparency.make_checkpoint(archive)
    entries(archive, 5)
    assert len(transparency.tile(archive, Tile(0, 0, head.size))) == 32 * head.size
    with pytest.raises(NotFound):
        transparency.tile(archive, Tile(0, 0, head.size + 1))
    with pytest.raises(NotFound):
        transparency.tile(archive, Tile(0, 0))  # the full tile is not there yet
    with pytest.raises(NotFound):
        transparency.inclusion_proof(archive, head.size + 20, head.size + 21)


def test_checkpoint_stamping_waits_longer_after_each_failure(settings):
    """No external TSA answers: the checkpoint keeps its built-in token only,
    and the job asks again after 5 s, then 10 s, not every tick."""
    from dataclasses import replace

    from sync.archive import Archive

    archive = Archive(replace(settings, tsa_url="http://127.0.0.1:9/down", tsa_ca_file=settings.keys_dir / "x"))
    entries(archive, 3)
    transparency.make_checkpoint(archive)
    now = [1000.0]
    job = transparency.CheckpointStampingJob(archive, monotonic=lambda: now[0])
    job()
    assert job.pause.failures == 1
    now[0] += 4.9
    job()
    assert job.pause.failures == 1  # not asked again yet
    now[0] += 0.2
    job()
    assert job.pause.failures == 2
    assert transparency.checkpoint_stamps(archive, 3)["external"] is None
