"""Readiness, the disk watermark and the numbers a metrics scrape reads,
against a real archive on the test's clock."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from crypto.aead import encrypt_chunk, new_content_key, seal_content_key
from sync.archive import Archive
from sync.domain import accounts, copies, finalize, health, ingest
from sync.domain.disk import disk_free_bytes
from sync.domain.scheduler import start_background_jobs
from sync.errors import StorageFull

from .test_races import new_recording, put, upload

T0 = datetime(2026, 11, 21, 14, 3, 7, 123000, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def recording_body(archive: Archive) -> tuple[ingest.NewRecording, bytes]:
    recording_id, key = str(uuid.uuid4()), new_content_key()
    sealed = seal_content_key(archive.keys.hpke_private.public_key(), recording_id, key)
    return ingest.NewRecording(recording_id, "video/mp4", "2026-11-21T14:03:07.123Z", archive.keys.hpke_key_id,
                               sealed), key


def chunk(archive, device_id, new, key, index, *, final=False):
    data = encrypt_chunk(key, new.recording_id, index, b"footage %d" % index, final=final)
    return ingest.accept_chunk(archive, device_id, upload(new.recording_id, index, data, final=final))


# -- the watermark -------------------------------------------------------------

def test_below_the_watermark_new_recordings_are_refused_and_started_ones_go_on(settings):
    archive = Archive(settings)
    device_id = accounts.register_device(archive)
    started, key = recording_body(archive)
    assert ingest.create_recording(archive, device_id, started)[1] is True
    assert chunk(archive, device_id, started, key, 0)[1] is True

    free = shutil.disk_usage(settings.data_dir).free
    assert disk_free_bytes(archive) <= free + 64 * 1024 * 1024  # the same disk, give or take other writers
    low = Archive(dataclasses.replace(settings, min_free_bytes=free + 2**40))
    new, _ = recording_body(low)
    with pytest.raises(StorageFull, match="takes no new recordings"):
        ingest.create_recording(low, device_id, new)
    assert low.database.one("SELECT id FROM recordings WHERE id = ?", [new.recording_id]) is None
    # A retry of the recording already made still answers; its chunks are taken.
    answer, created = ingest.create_recording(low, device_id, started)
    assert (answer["recording_id"], created) == (started.recording_id, False)
    assert chunk(low, device_id, started, key, 1)[1] is True
    assert health.readiness(low).checks["disk"] == "failing"
    assert health.readiness(archive).checks["disk"] == "ok"


# -- readiness -----------------------------------------------------------------

def test_readiness_needs_a_scheduler_leader_and_sees_one_in_its_own_process(settings):
    archive = Archive(settings)
    assert health.readiness(archive).checks == {"records": "ok", "chunk_store": "ok", "disk": "ok",
                                                "scheduler": "failing"}
    assert not health.leader_present(archive)
    jobs = start_background_jobs(archive)
    try:
        assert jobs.is_leader.wait(30)
        result = health.readiness(archive)
        assert result.ready and result.failing == [] and result.message() == "Ready."
        # Asking again and again never takes the lock from the leader.
        assert all(health.leader_present(archive) for _ in range(20))
        assert archive.settings.data_dir.joinpath("scheduler.lock").read_text().strip().isdigit()
    finally:
        jobs.stop()
    assert not health.leader_present(archive)


def test_a_chunk_store_that_cannot_be_written_is_named_and_leaves_nothing(settings):
    archive = Archive(settings)
    chunks = settings.data_dir / "chunks"
    assert health.readiness(archive).checks["chunk_store"] == "ok"
    assert [p.name for p in chunks.iterdir()] == []  # the probe file is gone again
    chunks.rename(settings.data_dir / "chunks-unmounted")
    result = health.readiness(archive)
    assert result.checks["chunk_store"] == "failing" and result.checks["records"] == "ok"
    assert result.failing == ["chunk_store", "scheduler"]
    assert "chunk_store: the chunk store cannot be written" in result.message()
    assert str(settings.data_dir) not in result.message()


def test_the_readiness_probe_runs_the_checks_at_most_once_per_second(settings, monkeypatch):
    archive = Archive(settings)
    seconds = Clock(100.0)
    probe = health.ReadinessProbe(archive, max_age_seconds=1.0, clock=seconds)
    runs = []
    real = health.readiness
    monkeypatch.setattr(health, "readiness", lambda archive: runs.append(1) or real(archive))
    assert probe().checks["chunk_store"] == "ok"
    (settings.data_dir / "chunks").rename(settings.data_dir / "chunks-unmounted")
    assert probe().checks["chunk_store"] == "ok" and len(runs) == 1  # the answer of a moment ago
    seconds.now += 0.99
    assert probe().checks["chunk_store"] == "ok" and len(runs) == 1
    seconds.now += 0.01
    assert probe().checks["chunk_store"] == "failing" and len(runs) == 2


# -- numbers for the metrics -----------------------------------------------------

def test_finalization_lag_is_how_long_the_most_overdue_recording_waits(settings):
    clock = Clock(T0)
    archive = Archive(dataclasses.replace(settings, idle_finalize_seconds=60), clock=clock)
    device_id, recording_id, key = new_recording(archive)
    put(archive, device_id, recording_id, key, 0)
    assert finalize.finalization_lag_seconds(archive) == 0.0
    clock.now = T0 + timedelta(seconds=59)
    assert finalize.finalization_lag_seconds(archive) == 0.0  # not due yet
    clock.now = T0 + timedelta(seconds=90)
    assert finalize.finalization_lag_seconds(archive) == pytest.approx(30.0)

    # A complete recording is due at its last chunk.
    device_b = accounts.register_device(archive)
    body, key_b = recording_body(archive)
    ingest.create_recording(archive, device_b, body)
    chunk(archive, device_b, body, key_b, 0, final=True)
    clock.now += timedelta(seconds=45)
    assert finalize.finalization_lag_seconds(archive) == pytest.approx(75.0)  # the idle one is older
    assert finalize.finalize_recording(archive, recording_id) == 1
    assert finalize.finalization_lag_seconds(archive) == pytest.approx(45.0)
    assert finalize.finalize_recording(archive, body.recording_id) == 1
    assert finalize.finalization_lag_seconds(archive) == 0.0
    # A late chunk makes the recording due again an idle period later.
    put(archive, device_id, recording_id, key, 1)
    clock.now += timedelta(seconds=61)
    assert finalize.finalization_lag_seconds(archive) == pytest.approx(1.0)


def test_the_archive_numbers(settings):
    clock = Clock(T0)
    archive = Archive(settings, clock=clock)
    numbers = health.archive_numbers(archive)
    assert (numbers.recordings_receiving, numbers.copy_builds_queued, numbers.copy_builds_running) == (0, 0, 0)
    assert numbers.min_free_bytes == settings.min_free_bytes and numbers.disk_free_bytes > 0
    assert numbers.scheduler_leader_present is False and numbers.finalization_lag_seconds == 0.0

    recordings = [new_recording(archive) for _ in range(3)]
    for device_id, recording_id, key in recordings:
        put(archive, device_id, recording_id, key, 0)
    assert health.archive_numbers(archive).recordings_receiving == 3
    finalized = recordings[0][1]
    assert finalize.finalize_recording(archive, finalized) == 1
    assert health.archive_numbers(archive).recordings_receiving == 2

    lawyer = copies.StaffMember("lee", "lawyer", 1)
    custodian = copies.StaffMember("dana", "custodian", 1)
    asked = [copies.request_copy(archive, lawyer, finalized, copies.NewCopyRequest(f"case {n}", "court"))
             for n in range(2)]
    assert health.archive_numbers(archive).copy_builds_queued == 0  # pending: nobody approved yet
    copies.approve(archive, custodian, asked[0]["request_id"], copies.Decision())
    assert health.archive_numbers(archive).copy_builds_queued == 1
    assert copies.build_approved_bundles(archive) == [asked[0]["request_id"]]
    assert health.archive_numbers(archive).copy_builds_queued == 0
