"""Devices that registered and never made a recording expire after a day,
on the archive's clock (no sleeping a day)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

from sync.archive import Archive
from sync.domain import accounts, audit, expiry
from sync.domain.scheduler import run_device_expiry

from .test_races import new_recording, put

T0 = datetime(2026, 11, 21, 14, 3, 7, 123000, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def devices(archive: Archive) -> set[str]:
    return {row["id"] for row in archive.database.query("SELECT id FROM devices")}


def expiry_entries(archive: Archive) -> list[dict]:
    rows = archive.database.query("SELECT * FROM audit WHERE action = 'devices.expired' ORDER BY id")
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def test_devices_that_never_made_a_recording_expire_a_day_after_registering(settings):
    clock = Clock(T0)
    archive = Archive(settings, clock=clock)
    other = accounts.create_organisation(archive, "other-org", "Other organisation")
    code = accounts.create_enrollment_code(archive, organisation_id=other.id)["code"]

    idle = [accounts.register_device(archive) for _ in range(3)]
    idle_elsewhere = accounts.register_device(archive, enrollment_code=code)
    uploader, recording_id, key = new_recording(archive)
    put(archive, uploader, recording_id, key, 0)
    started_only, _, _ = new_recording(archive)  # made a recording, no chunk yet
    revoked = accounts.register_device(archive)
    accounts.revoke_device(archive, 1, revoked, actor="staff:dana")
    clock.now = T0 + timedelta(hours=23)
    newcomer = accounts.register_device(archive)

    # Before a day has passed, nothing goes.
    assert expiry.expire_unused_devices(archive) == 0
    assert expiry_entries(archive) == []

    clock.now = T0 + timedelta(hours=24, seconds=1)
    assert expiry.expire_unused_devices(archive) == 5
    assert devices(archive) == {uploader, started_only, newcomer}
    for gone in (*idle, idle_elsewhere, revoked):
        assert accounts.active_device(archive, gone) is None
    # What the kept devices sent is untouched.
    assert archive.database.one("SELECT chunk_count FROM recordings WHERE id = ?", [recording_id])["chunk_count"] == 1

    # One summary entry per organisation that lost devices, count only.
    entries = expiry_entries(archive)
    assert [(e["organisation_id"], e["actor"], e["detail"]["count"]) for e in entries] == [(1, "system", 4),
                                                                                          (other.id, "system", 1)]
    assert all(set(e["detail"]) == {"count", "registered_before", "reason"} for e in entries)
    assert all(e["detail"]["registered_before"] == "2026-11-21T14:03:08.123Z" for e in entries)
    assert audit.verify_chain(archive).ok

    # The next run finds nothing and writes nothing; the newcomer's day comes later.
    assert expiry.expire_unused_devices(archive) == 0
    assert len(expiry_entries(archive)) == 2
    clock.now = T0 + timedelta(hours=47, seconds=1)
    run_device_expiry(archive)  # what the scheduler runs every hour
    assert devices(archive) == {uploader, started_only}
    assert [e["detail"]["count"] for e in expiry_entries(archive)] == [4, 1, 1]


def test_the_expiry_age_is_a_setting(settings):
    clock = Clock(T0)
    archive = Archive(dataclasses.replace(settings, unused_device_expiry_hours=2), clock=clock)
    device = accounts.register_device(archive)
    clock.now = T0 + timedelta(hours=1, minutes=59)
    assert expiry.expire_unused_devices(archive) == 0
    clock.now = T0 + timedelta(hours=2, seconds=1)
    assert expiry.expire_unused_devices(archive) == 1
    assert device not in devices(archive)


def test_a_flood_larger_than_one_batch_is_expired_in_one_run_with_one_entry(settings, monkeypatch):
    monkeypatch.setattr(expiry, "_BATCH", 7)
    clock = Clock(T0)
    archive = Archive(settings, clock=clock)
    for _ in range(30):
        accounts.register_device(archive)
    clock.now = T0 + timedelta(days=2)
    assert expiry.expire_unused_devices(archive) == 30
    assert devices(archive) == set()
    assert [e["detail"]["count"] for e in expiry_entries(archive)] == [30]
