"""Copy requests at the domain level: what a scheduler leader does after
taking over from one that died while building a bundle."""

from __future__ import annotations

from sync.archive import Archive
from sync.domain import audit, copies
from sync.domain.copies import StaffMember

from .test_migration import RECORDING, make_v1_file


def test_a_build_cut_short_is_started_again_and_its_partial_zip_removed(settings):
    make_v1_file(settings.data_dir / "witness.sqlite3")  # a recording to ask about
    archive = Archive(settings)
    lawyer = StaffMember("lee", "lawyer", 1)
    custodian = StaffMember("dana", "custodian", 1)
    request = copies.request_copy(archive, lawyer, RECORDING, copies.NewCopyRequest("c", "p"))
    copies.approve(archive, custodian, request["request_id"], copies.Decision())
    # What a leader killed mid-build leaves: the state, and half a zip.
    with archive.database.transaction() as db:
        db.execute("UPDATE copy_requests SET state = 'building' WHERE id = ?", [request["request_id"]])
    folder = settings.data_dir / copies.BUNDLES_FOLDER
    folder.mkdir(exist_ok=True)
    partial = folder / f".tmp-{request['request_id']}-0000.zip"
    partial.write_bytes(b"PK\x03\x04 half")

    assert copies.resume_interrupted_builds(archive) == 1
    assert copies.copy_request(archive, lawyer, request["request_id"])["state"] == "approved"
    assert not partial.exists()
    actions = [e["action"] for e in audit.list_entries(archive, 1, audit.AuditFilter(recording_id=RECORDING),
                                                       newest_first=False)[0]]
    assert actions[-3:] == ["copy.requested", "copy.approved", "copy.build_interrupted"]
    report = audit.verify_chain(archive)
    assert report.ok, report.problem
