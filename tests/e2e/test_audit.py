"""The audit log: what it records, how custodians read it, and how
`witness audit-verify` finds an edited or deleted row."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest
import requests

from crypto.hashing import canonical_json
from tests.support import Phone, ServerProcess, Staff

GENESIS = "0" * 64


def entry_hash(entry: dict) -> str:
    """The documented digest (docs/audit.md), computed here independently."""
    fields = {k: entry[k] for k in ("id", "at", "actor", "action", "recording_id", "detail", "prev_sha256")}
    fields.update({k: entry[k] for k in ("organisation_id", "recording_prev_sha256") if entry[k] is not None})
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def audit(server, custodian: Staff, **params) -> list[dict]:
    answer = requests.get(server.url + "/v1/audit", headers=custodian.auth, params={"limit": 500, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]


@pytest.fixture(scope="module")
def custodian(server) -> Staff:
    return Staff(server, "aud-custodian", "custodian")


def test_every_kind_of_event_is_recorded_with_its_actor(server, custodian):
    phone = Phone(server)
    recording = phone.create_recording()
    recording.put(0, recording.chunk(0))
    recording.put(0, recording.chunk(0, b"other bytes"))  # a conflicting re-upload
    recording.put(1, recording.chunk(1, final=True), final=True)
    server.wait_for(lambda: recording.status().json()["manifest_version"])
    observer = Staff(server, "aud-observer", "observer", made_by=custodian.token)
    requests.post(server.url + "/v1/auth/login", json={"username": "aud-observer", "password": "not the password"})
    requests.get(f"{server.url}/v1/recordings/{recording.id}", headers=observer.auth)
    requests.get(f"{server.url}/v1/recordings/{recording.id}/media", headers=observer.auth)
    requests.get(f"{server.url}/v1/recordings/{recording.id}/manifest", headers=observer.auth)
    requests.patch(f"{server.url}/v1/staff/{observer.id}", headers=custodian.auth, json={"role": "lawyer"})
    requests.patch(f"{server.url}/v1/staff/{observer.id}", headers=custodian.auth, json={"disabled": True})
    requests.post(f"{server.url}/v1/devices/{phone.device_id}/revoke", headers=custodian.auth)
    requests.post(server.url + "/v1/auth/logout", headers=bearer(custodian.login()["access_token"]))

    seen = {(e["actor"], e["action"]) for e in audit(server, custodian)}
    device = f"device:{phone.device_id}"
    expected = {
        (device, "device.registered"), (device, "recording.created"), (device, "chunk.received"),
        (device, "chunk.conflict"), ("system", "recording.finalized"),
        ("staff:aud-custodian", "staff.created"), ("staff:aud-observer", "staff.login"),
        ("staff:aud-observer", "staff.login_failed"), ("staff:aud-observer", "recording.viewed"),
        ("staff:aud-observer", "footage.streamed"), ("staff:aud-observer", "manifest.downloaded"),
        ("staff:aud-custodian", "staff.role_changed"), ("staff:aud-custodian", "staff.disabled"),
        ("staff:aud-custodian", "device.revoked"), ("staff:aud-custodian", "staff.logout"),
    }
    assert expected <= seen, expected - seen
    conflict = audit(server, custodian, recording_id=recording.id, action="chunk.conflict")
    assert [e["detail"]["rejected_ciphertext_sha256"] for e in conflict] == \
        [hashlib.sha256(recording.chunk(0, b"other bytes")).hexdigest()]
    changed = audit(server, custodian, action="staff.role_changed")
    assert [e["detail"] for e in changed] == [{"username": "aud-observer", "role_before": "observer",
                                               "role_after": "lawyer"}]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_a_recordings_custody_log_is_a_chain_of_its_own(server, custodian):
    phone = Phone(server)
    recording = phone.create_recording()
    for index in range(3):
        recording.put(index, recording.chunk(index))
    Phone(server).create_recording()  # other entries interleave in the server-wide chain
    entries = audit(server, custodian, recording_id=recording.id, order="asc")
    assert [e["action"] for e in entries] == ["recording.created"] + ["chunk.received"] * 3
    previous = GENESIS
    for entry in entries:
        assert entry_hash(entry) == entry["sha256"]
        assert entry["recording_prev_sha256"] == previous
        previous = entry["sha256"]
    # The server-wide chain links every entry to the one before it.
    whole = audit(server, custodian, order="asc")
    for before, after in zip(whole, whole[1:]):
        if after["id"] == before["id"] + 1:
            assert after["prev_sha256"] == before["sha256"]


def test_custodians_filter_and_page_the_log(server, custodian):
    start = datetime.now(timezone.utc).isoformat()
    phone = Phone(server)
    recording = phone.create_recording()
    for index in range(5):
        recording.put(index, recording.chunk(index))
    mine = audit(server, custodian, actor=f"device:{phone.device_id}", order="asc")
    assert [e["action"] for e in mine] == ["device.registered", "recording.created"] + ["chunk.received"] * 5
    assert audit(server, custodian, actor=f"device:{phone.device_id}", to="2000-01-01T00:00:00Z") == []
    assert len(audit(server, custodian, actor=f"device:{phone.device_id}", **{"from": start})) == 7
    pages, cursor = [], None
    while True:
        params = {"recording_id": recording.id, "limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = requests.get(server.url + "/v1/audit", headers=custodian.auth, params=params).json()
        pages.append([e["id"] for e in answer["entries"]])
        cursor = answer["next_cursor"]
        if not cursor:
            break
    flat = [i for page in pages for i in page]
    assert flat == sorted(flat, reverse=True) and len(flat) == len(set(flat)) == 6
    bad = requests.get(server.url + "/v1/audit", headers=custodian.auth, params={"order": "sideways"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_order"


@pytest.fixture
def stopped_server_with_history(tmp_path):
    server = ServerProcess(tmp_path / "server").start()
    custodian = Staff(server, "aud-verify-custodian", "custodian")
    phone = Phone(server)
    recording = phone.create_recording()
    for index in range(4):
        recording.put(index, recording.chunk(index))
    requests.get(f"{server.url}/v1/recordings/{recording.id}/media", headers=custodian.auth)
    server.stop()
    yield server
    server.kill()


def verify(server):
    return server.cli("audit-verify")


def test_audit_verify_passes_an_untouched_log(stopped_server_with_history):
    result = verify(stopped_server_with_history)
    assert result.returncode == 0, result.stderr
    assert "audit log intact" in result.stdout and "head: entry" in result.stdout


@pytest.mark.parametrize("tamper,named", [
    ("UPDATE audit SET detail = '{\"index\":1,\"size\":1}' WHERE action = 'chunk.received' AND id = "
     "(SELECT MIN(id) FROM audit WHERE action = 'chunk.received')", "was edited"),
    ("UPDATE audit SET actor = 'system' WHERE id = 3", "entry 3 was edited"),
    ("DELETE FROM audit WHERE id = 4", "entry 4 is missing"),
    ("DELETE FROM audit WHERE id = (SELECT MAX(id) FROM audit)", "newest rows were deleted"),
])
def test_audit_verify_names_the_first_broken_entry(stopped_server_with_history, tamper, named):
    server = stopped_server_with_history
    assert server.execute(tamper) == 1
    result = verify(server)
    assert result.returncode == 1
    assert "BROKEN at entry" in result.stderr and named in result.stderr, result.stderr


def test_a_rewritten_chain_still_breaks_at_the_first_edit(stopped_server_with_history):
    """Someone who edits a row and recomputes that row's own hash still
    breaks the link from the next row."""
    server = stopped_server_with_history
    (row,) = server.query("SELECT * FROM audit WHERE id = 5")
    row["actor"] = "system"
    row["detail"] = json.loads(row["detail"])
    rehashed = entry_hash(row)
    server.execute("UPDATE audit SET actor = 'system', sha256 = ? WHERE id = 5", [rehashed])
    result = verify(server)
    assert result.returncode == 1 and "entry 6 does not link to entry 5" in result.stderr, result.stderr
