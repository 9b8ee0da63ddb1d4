"""The `BlobStore` contract (copy bundles), run against every adapter:
large blobs go in from a stream and come back by byte range, with memory
flat, and nothing partial is ever visible under a name."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc

import pytest

from sync.errors import StoreUnavailable
from sync.storage import read_blocks

from ..services import SeaweedFS
from .stores import contract_bucket, s3_credentials, s3_stores, stores  # noqa: F401 (fixtures)

MIB = 1024 * 1024


def blocks(count: int, size: int = MIB):
    """`count` blocks of distinct bytes, made one at a time."""
    for number in range(count):
        yield hashlib.sha256(str(number).encode()).digest() * (size // 32)


def everything(blob_store, name: str) -> bytes:
    return b"".join(read_blocks(blob_store.open(name)))


def test_put_then_open_gives_the_bytes_back_and_size_says_how_many(stores):
    data = os.urandom(3 * MIB + 17)
    assert stores.blobs.size("a.zip") is None
    assert stores.blobs.put("a.zip", [data[:MIB], data[MIB:]]) == len(data)
    assert stores.blobs.size("a.zip") == len(data)
    assert everything(stores.blobs, "a.zip") == data


def test_ranges_come_back_exactly(stores):
    data = b"".join(blocks(10))  # more than one S3 part
    stores.blobs.put("r.zip", iter([data]))
    for start, end in [(0, 0), (0, 99), (MIB - 5, MIB + 5), (8 * MIB - 1, 8 * MIB + 1), (len(data) - 10, len(data) - 1)]:
        with stores.blobs.open("r.zip", start, end) as part:
            assert part.read() == data[start:end + 1], (start, end)
    with stores.blobs.open("r.zip", len(data) - 3) as tail:
        assert tail.read() == data[-3:]


def test_an_empty_blob_is_a_blob(stores):
    assert stores.blobs.put("empty.zip", []) == 0
    assert stores.blobs.size("empty.zip") == 0 and everything(stores.blobs, "empty.zip") == b""


def test_a_put_replaces_a_blob_of_the_same_name(stores):
    stores.blobs.put("b.zip", [b"first build"])
    stores.blobs.put("b.zip", [b"second build, longer"])
    assert everything(stores.blobs, "b.zip") == b"second build, longer"


def test_put_file_stores_a_finished_file_and_consumes_it(stores, tmp_path):
    built = tmp_path / "scratch.zip"
    built.write_bytes(b"PK" + os.urandom(2 * MIB))
    expected = built.read_bytes()
    assert stores.blobs.put_file("c.zip", built) == len(expected)
    assert not built.exists()
    assert everything(stores.blobs, "c.zip") == expected


def test_delete_removes_a_blob_and_is_quiet_when_it_is_absent(stores):
    stores.blobs.put("d.zip", [b"bundle"])
    stores.blobs.delete("d.zip")
    assert stores.blobs.size("d.zip") is None
    with pytest.raises(FileNotFoundError):
        stores.blobs.open("d.zip")
    stores.blobs.delete("d.zip")


def test_a_64_mib_blob_streams_in_and_out_with_flat_memory(stores):
    expected = hashlib.sha256()
    for block in blocks(64):
        expected.update(block)
    tracemalloc.start()
    try:
        assert stores.blobs.put("big.zip", blocks(64)) == 64 * MIB
        _, put_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tracemalloc.start()
    try:
        got = hashlib.sha256()
        for block in read_blocks(stores.blobs.open("big.zip")):
            got.update(block)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.hexdigest() == expected.hexdigest()
    # A few blocks (S3: a part of 8 MiB and its copy) at a time, never the blob.
    assert put_peak < 32 * MIB, put_peak
    assert read_peak < 16 * MIB, read_peak


def test_a_stream_that_fails_halfway_leaves_nothing(stores):
    stores.blobs.put("f.zip", [b"the bundle built before"])

    def failing():
        yield from blocks(12)  # past the first S3 part
        raise RuntimeError("the build failed")

    with pytest.raises(RuntimeError):
        stores.blobs.put("f.zip", failing())
    with pytest.raises(RuntimeError):
        stores.blobs.put("g.zip", failing())
    assert everything(stores.blobs, "f.zip") == b"the bundle built before"
    assert stores.blobs.size("g.zip") is None
    assert stores.leftovers() == []


def test_unfinished_writes_of_a_dead_process_are_removed(stores):
    if stores.kind == "files":
        (stores.blobs.root / ".tmp-x.zip.0123").write_bytes(b"half")
    else:
        client = stores.blobs._client()
        client.create_multipart_upload(Bucket=stores.blobs.bucket, Key=f"{stores.blobs.prefix}bundles/x.zip")
    assert stores.leftovers() != []
    assert stores.blobs.remove_unfinished() == 1
    assert stores.leftovers() == [] and stores.blobs.size("x.zip") is None


def test_s3_the_store_killed_mid_upload_is_unavailable_and_nothing_shows(tmp_path, s3_credentials):
    seaweedfs = SeaweedFS(tmp_path / "seaweedfs").start()
    try:
        bucket = seaweedfs.bucket("witness-down")
        stores = s3_stores(seaweedfs, bucket, f"s3://{bucket}/down")
        stores.blobs.put("kept.zip", [b"built before the crash"])
        killed = threading.Event()

        def killed_after_two_parts():
            for number, block in enumerate(blocks(40)):
                if number == 20:  # two 8 MiB parts are up
                    seaweedfs.stop()
                    killed.set()
                yield block

        with pytest.raises(StoreUnavailable):
            stores.blobs.put("cut.zip", killed_after_two_parts())
        assert killed.is_set()
        for attempt in (lambda: stores.blobs.size("kept.zip"), lambda: stores.blobs.open("kept.zip"),
                        lambda: stores.blobs.delete("kept.zip"), lambda: stores.blobs.put("new.zip", [b"x"])):
            with pytest.raises(StoreUnavailable):
                attempt()

        seaweedfs.start()
        assert stores.blobs.size("cut.zip") is None
        assert everything(stores.blobs, "kept.zip") == b"built before the crash"
        # The upload it could not abandon while down is removed by the next leader.
        stores.blobs.remove_unfinished()
        assert stores.leftovers() == []
    finally:
        seaweedfs.stop()
