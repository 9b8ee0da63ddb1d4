"""Interleavings found in review, made deterministic through the chunk-store
seam: acknowledged chunks must always have their file, and only proven
damage may take a chunk out of the records."""

from __future__ import annotations

import errno
import hashlib
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from crypto.aead import encrypt_chunk, new_content_key, seal_content_key
from sync.archive import Archive
from sync.domain import accounts, finalize, ingest
from sync.domain.footage import FootageDamaged, iter_chunk_plaintexts
from sync.errors import Busy
from sync.records.rows import Chunk
from sync.storage.files import FileChunkStore



class TwinFailsStore(FileChunkStore):
    """After our object is stored, an identical upload (same name) that
    failed cleans up: it finds no row holding the name, and removes it."""

    archive = None
    remove_after_put = False

    def put(self, recording_id, name, data):
        super().put(recording_id, name, data)
        if self.remove_after_put:
            self.remove_after_put = False
            assert ingest.discard_unheld_chunks(self.archive, recording_id, [name]) == [name]


class FlakyReadStore(FileChunkStore):
    """Opening a chunk fails once with a passing error (too many open files)."""

    fail_next_open = False

    def open(self, recording_id, name):
        if self.fail_next_open:
            self.fail_next_open = False
            raise OSError(errno.EMFILE, "Too many open files")
        return super().open(recording_id, name)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def new_recording(archive: Archive):
    device_id = accounts.register_device(archive)
    recording_id, key = str(uuid.uuid4()), new_content_key()
    sealed = seal_content_key(archive.keys.hpke_private.public_key(), recording_id, key)
    ingest.create_recording(archive, device_id, ingest.NewRecording(
        recording_id, "video/mp4", "2026-11-21T14:03:07.123Z", archive.keys.hpke_key_id, sealed))
    return device_id, recording_id, key


def upload(recording_id: str, index: int, data: bytes, *, final: bool = False) -> ingest.ChunkUpload:
    """The command a chunk's PUT makes (its Content-Digest already read)."""
    return ingest.ChunkUpload(recording_id, index, data, digest=hashlib.sha256(data).digest(), final=final)


def put(archive, device_id, recording_id, key, index, plaintext=b"footage"):
    body = encrypt_chunk(key, recording_id, index, plaintext, final=False)
    return ingest.accept_chunk(archive, device_id, upload(recording_id, index, body))


def test_an_acknowledged_chunk_always_has_its_file(settings):
    store = TwinFailsStore(settings.data_dir / "chunks")
    archive = store.archive = Archive(settings, chunk_store=store)
    device_id, recording_id, key = new_recording(archive)
    store.remove_after_put = True
    # The twin's removal was announced after we looked: we may have lost our
    # object, so nothing is acknowledged and nothing is kept.
    with pytest.raises(Busy):
        put(archive, device_id, recording_id, key, 0)
    assert ingest.recording_status(archive, recording_id)["received"] == []
    assert store.list_chunks(recording_id) == []
    # The phone's retry is acknowledged, with its object.
    receipt, created = put(archive, device_id, recording_id, key, 0)
    assert created
    stored = store.stat(recording_id, ingest.chunk_file_name(0, receipt["sha256"]))
    assert stored is not None and stored.size == receipt["size"]


def test_an_upload_waits_for_a_removal_of_its_name_under_way(settings):
    clock = Clock(datetime(2026, 11, 21, 14, 0, tzinfo=timezone.utc))
    archive = Archive(settings, clock=clock)
    device_id, recording_id, key = new_recording(archive)
    body = encrypt_chunk(key, recording_id, 0, b"footage", final=False)
    name = ingest.chunk_file_name(0, hashlib.sha256(body).hexdigest())
    # A remover announced the removal of this very name and has not finished.
    with archive.database.transaction() as db:
        ingest.announce_removals(db, archive, recording_id, [name])
    with pytest.raises(Busy):
        ingest.accept_chunk(archive, device_id, upload(recording_id, 0, body))
    assert archive.chunks.stat(recording_id, name) is None  # refused before anything was written
    # A remover that died stops blocking the name after the lease.
    clock.now += timedelta(seconds=ingest.REMOVAL_LEASE_SECONDS + 1)
    receipt, created = ingest.accept_chunk(archive, device_id, upload(recording_id, 0, body))
    assert created and archive.chunks.stat(recording_id, name).size == receipt["size"]


def test_a_file_is_discarded_only_when_no_record_holds_it(archive):
    device_id, recording_id, key = new_recording(archive)
    receipt, _ = put(archive, device_id, recording_id, key, 0)
    held = ingest.chunk_file_name(0, receipt["sha256"])
    stray = ingest.chunk_file_name(1, hashlib.sha256(b"x").hexdigest())
    archive.chunks.put(recording_id, stray, b"x")
    assert ingest.discard_unheld_chunks(archive, recording_id, [held, stray]) == [stray]
    assert [c.name for c in archive.chunks.list_chunks(recording_id)] == [held]
    assert archive.chunks.stat(recording_id, held).size == receipt["size"]
    # The next upload of the stray's index is not held up by the finished removal.
    assert put(archive, device_id, recording_id, key, 1)[1] is True


def test_a_passing_read_error_does_not_forget_a_chunk(settings):
    store = FlakyReadStore(settings.data_dir / "chunks")
    archive = Archive(settings, chunk_store=store)
    device_id, recording_id, key = new_recording(archive)
    put(archive, device_id, recording_id, key, 0)
    recording = ingest.owned_recording(archive, recording_id, None)
    rows = archive.database.fetch(Chunk, "SELECT * FROM chunks WHERE recording_id = ?", [recording_id])
    store.fail_next_open = True
    with pytest.raises(OSError):
        list(iter_chunk_plaintexts(archive, recording, rows))
    assert ingest.recording_status(archive, recording_id)["received"] == [[0, 0]]
    assert not (store.root / ".quarantine").exists()
    assert [p for _, p in iter_chunk_plaintexts(archive, recording, rows)] == [b"footage"]


def test_a_damaged_chunk_is_quarantined_and_the_next_manifest_shows_the_gap(archive):
    device_id, recording_id, key = new_recording(archive)
    for index in range(3):
        put(archive, device_id, recording_id, key, index)
    receipt = ingest.recording_status(archive, recording_id)
    assert receipt["received"] == [[0, 2]]
    (stored,) = [p for p in (archive.chunks.root / recording_id).iterdir() if p.name.startswith("0000000001")]
    stored.write_bytes(b"X" * stored.stat().st_size)  # same size, other bytes
    with pytest.raises(FootageDamaged):
        finalize.finalize_recording(archive, recording_id)
    assert finalize.finalize_recording(archive, recording_id) == 1
    manifest = finalize.signed_manifest(archive, recording_id)
    assert b'"gaps":[[1,1]]' in manifest.body
    actions = [r["action"] for r in archive.database.query("SELECT action FROM audit WHERE recording_id = ?",
                                                              [recording_id])]
    assert "chunk.damaged" in actions


def test_workers_opening_a_new_database_together_all_start(tmp_path):
    code = ("import sys; from pathlib import Path; from sync.records.sqlite import SQLiteRecords; "
            "SQLiteRecords(Path(sys.argv[1])); print('ok')")
    for attempt in range(5):
        path = tmp_path / f"db{attempt}" / "witness.sqlite3"
        path.parent.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        results = [p.communicate(timeout=60) for p in procs]
        assert [out.strip() for out, _ in results] == ["ok"] * 6, [err for _, err in results]
