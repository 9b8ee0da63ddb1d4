"""The `ChunkStore` contract (with its `ChunkListing` capability), run
against every adapter: what the domain may rely on, whatever holds the bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid

import pytest

from sync.domain.ingest import chunk_file_name
from sync.errors import StorageFull, StoreUnavailable
from sync.storage import ChunkListing, StoredChunk
from sync.storage.files import FileChunkStore

from ..services import SeaweedFS
from .stores import contract_bucket, s3_credentials, s3_stores, stores  # noqa: F401 (fixtures)


def name_of(index: int, data: bytes) -> str:
    return chunk_file_name(index, hashlib.sha256(data).hexdigest())


def read(store, recording_id: str, name: str) -> bytes:
    with store.open(recording_id, name) as stored:
        return stored.read()


def test_put_then_open_gives_the_bytes_back(stores):
    recording_id, data = str(uuid.uuid4()), os.urandom(300_000)
    store = stores.chunks
    store.put(recording_id, name_of(0, data), data)
    with store.open(recording_id, name_of(0, data)) as stored:
        pieces = [stored.read(65536) for _ in range(5)]  # a stream: read in pieces
        assert stored.read() == b""
    assert b"".join(pieces) == data


def test_stat_tells_size_and_age_and_absence(stores):
    recording_id, data = str(uuid.uuid4()), b"x" * 1234
    store, before = stores.chunks, time.time()
    assert store.stat(recording_id, name_of(0, data)) is None
    store.put(recording_id, name_of(0, data), data)
    stored = store.stat(recording_id, name_of(0, data))
    assert (stored.name, stored.size) == (name_of(0, data), 1234)
    assert before - 2 <= stored.stored_at <= time.time() + 2  # S3 times are whole seconds
    with pytest.raises(FileNotFoundError):
        store.open(recording_id, name_of(1, data))


def test_the_same_bytes_again_are_stored_once(stores):
    recording_id, data = str(uuid.uuid4()), os.urandom(5000)
    store = stores.chunks
    store.put(recording_id, name_of(3, data), data)
    store.put(recording_id, name_of(3, data), data)  # a retry: no error
    assert read(store, recording_id, name_of(3, data)) == data
    assert [c.name for c in store.list_chunks(recording_id)] == [name_of(3, data)]


def test_other_bytes_for_an_index_go_under_another_name_and_both_are_kept(stores):
    recording_id, first, second = str(uuid.uuid4()), b"the real footage", b"a replacement"
    store = stores.chunks
    store.put(recording_id, name_of(0, first), first)
    store.put(recording_id, name_of(0, second), second)
    assert read(store, recording_id, name_of(0, first)) == first
    assert read(store, recording_id, name_of(0, second)) == second
    assert sorted(c.name for c in store.list_chunks(recording_id)) == sorted([name_of(0, first), name_of(0, second)])


def test_bytes_damaged_under_a_name_are_replaced_by_a_put_of_the_right_ones(stores):
    recording_id, data = str(uuid.uuid4()), os.urandom(4096)
    store = stores.chunks
    store.put(recording_id, name_of(0, data), data)
    stores.overwrite(recording_id, name_of(0, data), b"rotten" * 100)
    store.put(recording_id, name_of(0, data), data)  # the phone sends it again
    assert read(store, recording_id, name_of(0, data)) == data


def test_delete_removes_a_chunk_and_is_quiet_when_it_is_absent(stores):
    recording_id, data = str(uuid.uuid4()), b"gone soon"
    store = stores.chunks
    store.put(recording_id, name_of(0, data), data)
    store.delete(recording_id, name_of(0, data))
    assert store.stat(recording_id, name_of(0, data)) is None
    assert store.list_chunks(recording_id) == []
    store.delete(recording_id, name_of(0, data))
    store.delete(str(uuid.uuid4()), name_of(9, data))


def test_listing_names_recordings_and_their_chunks_with_sizes(stores):
    store = stores.chunks
    assert isinstance(store, ChunkListing)
    first, second = sorted([str(uuid.uuid4()), str(uuid.uuid4())])
    pieces = {first: [b"a" * 10, b"bb" * 10, b"ccc" * 10], second: [b"d" * 7]}
    for recording_id, datas in pieces.items():
        for index, data in enumerate(datas):
            store.put(recording_id, name_of(index, data), data)
    store.probe()  # never listed
    assert list(store.recording_ids()) == [first, second]
    listed = store.list_chunks(first)
    assert [(c.name, c.size) for c in listed] == [(name_of(i, d), len(d)) for i, d in enumerate(pieces[first])]
    assert all(isinstance(c, StoredChunk) and c.stored_at > time.time() - 60 for c in listed)
    assert store.list_chunks(str(uuid.uuid4())) == []


def test_quarantine_keeps_the_bytes_apart_and_takes_the_chunk_away(stores):
    recording_id, data = str(uuid.uuid4()), b"damaged, kept for examination"
    store = stores.chunks
    store.put(recording_id, name_of(0, data), data)
    store.quarantine(recording_id, name_of(0, data))
    assert store.stat(recording_id, name_of(0, data)) is None
    assert store.list_chunks(recording_id) == []
    assert stores.quarantined(recording_id) == [data]
    store.quarantine(recording_id, name_of(0, data))  # absent: nothing happens
    assert stores.quarantined(recording_id) == [data]
    # The same bytes, sent again, are stored again.
    store.put(recording_id, name_of(0, data), data)
    assert read(store, recording_id, name_of(0, data)) == data


def test_a_probe_leaves_nothing_behind(stores):
    store = stores.chunks
    store.probe()
    assert list(store.recording_ids()) == [] and stores.leftovers() == []


# -- failure: the store cannot take the chunk -----------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system, so the disk really fills up (CI runs as root)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_files_a_full_disk_is_storage_full_and_leaves_nothing_partial(small_disk):
    store = FileChunkStore(small_disk / "chunks")
    recording_id, kept = str(uuid.uuid4()), []
    with pytest.raises(StorageFull):
        for index in range(20):
            data = os.urandom(200_000)
            store.put(recording_id, name_of(index, data), data)
            kept.append((name_of(index, data), data))
    assert kept, "the disk should have held a few chunks first"
    assert [c.name for c in store.list_chunks(recording_id)] == [name for name, _ in kept]
    assert sorted(p.name for p in (store.root / recording_id).iterdir()) == [name for name, _ in kept]  # no temporaries


def test_s3_a_store_that_is_down_is_unavailable_and_keeps_nothing_partial(tmp_path, s3_credentials):
    seaweedfs = SeaweedFS(tmp_path / "seaweedfs").start()
    try:
        bucket = seaweedfs.bucket("witness-down")
        stores = s3_stores(seaweedfs, bucket, f"s3://{bucket}/down")
        store, recording_id = stores.chunks, str(uuid.uuid4())
        held, lost = b"acknowledged before the crash", os.urandom(100_000)
        store.put(recording_id, name_of(0, held), held)
        seaweedfs.stop()  # SIGKILL

        started = time.monotonic()
        for attempt in (lambda: store.put(recording_id, name_of(1, lost), lost),
                        lambda: store.open(recording_id, name_of(0, held)),
                        lambda: store.stat(recording_id, name_of(0, held)),
                        lambda: store.delete(recording_id, name_of(0, held)),
                        lambda: store.list_chunks(recording_id),
                        lambda: list(store.recording_ids()),
                        store.probe):
            with pytest.raises(StoreUnavailable):
                attempt()
        assert time.monotonic() - started < 60  # each call gives up within seconds

        seaweedfs.start()
        assert [(c.name, c.size) for c in store.list_chunks(recording_id)] == [(name_of(0, held), len(held))]
        assert read(store, recording_id, name_of(0, held)) == held
        assert stores.leftovers() == []
    finally:
        seaweedfs.stop()
