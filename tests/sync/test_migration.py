"""A records file made by the first release (schema version 1) opens in
this one: everything joins the default organisation, recording counters are
computed from the chunks held, and the old audit entries still verify."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sync.archive import Archive
from sync.domain import audit, logins
from sync.domain.accounts import hash_password
from sync.domain.retrieval import RecordingFilter, Viewer, list_recordings
from sync.records.migrations import latest_version

SCHEMA_V1 = Path(__file__).with_name("schema_v1.sql")
DEVICE, RECORDING = "0b0e7a3c-6a55-4f4e-9d71-2f1b8f9c0a11", "5e3c0d7e-1f43-4c8a-a9d2-6b7f1e2a3b4c"


def make_v1_file(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_V1.read_text())
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute("INSERT INTO devices (id, created_at) VALUES (?, '2026-01-01T00:00:00.000Z')", [DEVICE])
        db.execute("INSERT INTO staff (username, role, password_hash, created_at) VALUES "
                   "('old-hand', 'custodian', ?, '2026-01-01T00:00:00.000Z')", [hash_password("an old password!")])
        db.execute("INSERT INTO recordings (id, device_id, content_type, started_at, key_id, sealed_key, created_at, "
                   "state, last_activity_at, generation, last_received_at) VALUES (?, ?, 'video/mp4', "
                   "'2026-01-01T00:00:00.000Z', 'hpke-x', x'00', '2026-01-01T00:00:01.000Z', 'interrupted', "
                   "'2026-01-01T00:00:05.000Z', 3, '2026-01-01T00:00:05.000Z')", [RECORDING, DEVICE])
        for index, size in ((0, 100), (1, 200), (3, 400)):  # chunk 2 never arrived
            db.execute("INSERT INTO chunks VALUES (?, ?, 0, ?, ?, ?, ?, '2026-01-01T00:00:02.000Z', NULL, NULL)",
                       [RECORDING, index, size, "a" * 64, size + 16, f"{index:064x}"])
        previous = audit.GENESIS
        for number, (actor, action) in enumerate([(f"device:{DEVICE}", "device.registered"),
                                                  (f"device:{DEVICE}", "recording.created")], start=1):
            entry = {"id": number, "at": "2026-01-01T00:00:00.000Z", "actor": actor, "action": action,
                     "recording_id": RECORDING if number == 2 else None, "detail": "{}", "prev_sha256": previous,
                     "organisation_id": None, "recording_prev_sha256": None}
            entry["sha256"] = audit.entry_digest(entry)
            db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [entry[k] for k in ("id", "at", "actor", "action", "recording_id", "detail",
                                           "prev_sha256", "sha256")])
            previous = entry["sha256"]


def test_a_version_1_file_is_brought_up_to_date(settings):
    make_v1_file(settings.data_dir / "witness.sqlite3")
    archive = Archive(settings)
    db = archive.database
    assert db.one("SELECT value FROM meta WHERE key = 'schema_version'")["value"] == str(latest_version("sqlite"))
    assert db.one("SELECT slug FROM organisations WHERE id = 1")["slug"] == "default"
    assert {db.one(f"SELECT organisation_id FROM {table}")["organisation_id"]
            for table in ("devices", "staff", "recordings")} == {1}
    counters = db.one("SELECT chunk_count, max_index, footage_size FROM recordings")
    assert counters == {"chunk_count": 3, "max_index": 3, "footage_size": 700}
    found, _ = list_recordings(archive, Viewer("staff:old-hand", 1), RecordingFilter(has_gaps=True))
    assert [(r["recording_id"], r["missing_chunks"]) for r in found] == [(RECORDING, 1)]

    report = audit.verify_chain(archive)
    assert report.ok and report.entries == 2 and "predates head anchoring" in report.notes[0]
    staff = logins.authenticate_staff(archive, "old-hand", "an old password!", client="test")  # appends to the old chain
    assert staff.organisation_id == 1 and staff.session_generation == 0
    report = audit.verify_chain(archive)
    assert report.ok and report.entries == 3 and report.head_id == 3 and not report.notes

    Archive(settings)  # opening again changes nothing
    assert db.one("SELECT COUNT(*) AS n FROM organisations")["n"] == 1
