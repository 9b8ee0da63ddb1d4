"""The audit log: what it records, how custodians read it, and how
`witness audit-verify` finds an edited or deleted row."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest
import requests

from crypto.hashing import canonical_json
from tests.support import Phone, ServerProcess, Staff, wait_until

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
    # Entries about a recording are in its chain only; entries about no
    # recording (here: the custodian's own account) chain server-wide.
    assert all(entry["prev_sha256"] is None for entry in entries)
    others = [e for e in audit(server, custodian, order="asc") if e["recording_id"] is None]
    assert others and all(len(entry["prev_sha256"]) == 64 for entry in others)


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
    """Two recordings' chains, anchored once in the server-wide chain, then
    one more chunk of the first recording after the anchor."""
    server = ServerProcess(tmp_path / "server", WITNESS_AUDIT_ANCHOR_SECONDS=0.5,
                           WITNESS_LOG_CHECKPOINT_SECONDS=0.5).start()
    custodian = Staff(server, "aud-verify-custodian", "custodian")
    phone = Phone(server)
    recording, other = phone.create_recording(), phone.create_recording()
    for index in range(4):
        recording.put(index, recording.chunk(index))
    other.put(0, other.chunk(0))
    requests.get(f"{server.url}/v1/recordings/{recording.id}/media", headers=custodian.auth)
    wait_until(lambda: server.query("SELECT id FROM audit WHERE action = 'audit.anchored' AND id > "
                                    "(SELECT MAX(id) FROM audit WHERE recording_id = ?)", [other.id]),
               "an anchor of both recordings' chains", 30)
    recording.put(4, recording.chunk(4))
    # ... and a signed checkpoint of the transparency log covering all of it.
    wait_until(lambda: server.query("SELECT size FROM tlog_checkpoints WHERE size >= "
                                    "(SELECT COUNT(*) FROM tlog_leaves)"), "a checkpoint of every leaf", 30)
    server.stop()
    server.recording_id, server.other_id = recording.id, other.id
    yield server
    server.kill()


def verify(server):
    return server.cli("audit-verify")


def test_audit_verify_passes_an_untouched_log(stopped_server_with_history):
    result = verify(stopped_server_with_history)
    assert result.returncode == 0, result.stderr
    assert "audit log intact" in result.stdout and "head: entry" in result.stdout
    assert "server-wide chain head: entry" in result.stdout and " 0 anchors" not in result.stdout


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


def rehash(server, row: dict, **changes) -> str:
    """Change a row's fields and recompute its own hash, as a forger would."""
    row = {**row, **changes}
    row["detail"] = json.loads(row["detail"]) if isinstance(row["detail"], str) else row["detail"]
    assignments = ", ".join(f"{name} = ?" for name in changes)
    detail = canonical_json(row["detail"]).decode() if "detail" in changes else None
    values = [detail if name == "detail" else value for name, value in changes.items()]
    server.execute(f"UPDATE audit SET {assignments}, sha256 = ? WHERE id = ?", [*values, entry_hash(row), row["id"]])
    return entry_hash(row)


def test_a_rewritten_chain_still_breaks_at_the_first_edit(stopped_server_with_history):
    """Someone who edits a row and recomputes that row's own hash still
    breaks the link from the next row of its chain: a recording's, or the
    server-wide one."""
    server = stopped_server_with_history
    first, second = server.query("SELECT * FROM audit WHERE action = 'chunk.received' AND recording_id = ? "
                                 "ORDER BY id LIMIT 2", [server.recording_id])
    rehash(server, first, actor="system")
    result = verify(server)
    assert result.returncode == 1, result.stdout
    assert (f"entry {second['id']} does not link to the previous entry about recording {server.recording_id}"
            in result.stderr), result.stderr


def test_a_rewritten_server_wide_entry_breaks_the_next_one(stopped_server_with_history):
    server = stopped_server_with_history
    first, second = server.query("SELECT * FROM audit WHERE recording_id IS NULL ORDER BY id LIMIT 2")
    rehash(server, first, actor="staff:forger")
    result = verify(server)
    assert result.returncode == 1
    assert f"entry {second['id']} does not link to the entry before it in the server-wide chain" in result.stderr


def test_dropping_a_recordings_newest_entry_shows_in_its_recorded_head(stopped_server_with_history):
    # The first recording's last chunk, after the anchor, goes with every
    # row after it, and the server-wide head is set to what is left: no id
    # is missing and the server-wide chain is whole, but the recording's
    # recorded head names the entry that went.
    server = stopped_server_with_history
    (last,) = server.query("SELECT * FROM audit WHERE recording_id = ? ORDER BY id DESC LIMIT 1", [server.recording_id])
    assert last["action"] == "chunk.received"
    (before,) = server.query("SELECT id FROM audit WHERE recording_id = ? AND id < ? ORDER BY id DESC LIMIT 1",
                             [server.recording_id, last["id"]])
    server.execute("DELETE FROM audit WHERE id >= ?", [last["id"]])
    (head,) = server.query("SELECT id, sha256 FROM audit WHERE prev_sha256 IS NOT NULL ORDER BY id DESC LIMIT 1")
    server.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", [f"{head['id']}:{head['sha256']}"])
    result = verify(server)
    assert result.returncode == 1
    assert (f"recording {server.recording_id}'s chain ends at entry {before['id']}, but entry {last['id']} "
            "was written") in result.stderr, result.stderr


def test_a_recording_chain_cut_before_an_anchor_breaks_the_anchor(stopped_server_with_history):
    """A forger with the database deletes a recording's last anchored chunk
    entry and rewrites every later row so that ids, recording links and
    recorded heads agree again: the anchor still names the old head."""
    server = stopped_server_with_history
    (cut,) = server.query("SELECT * FROM audit WHERE recording_id = ? AND action = 'chunk.received'",
                          [server.other_id])
    (anchor,) = server.query("SELECT * FROM audit WHERE action = 'audit.anchored' AND id > ? ORDER BY id LIMIT 1",
                             [cut["id"]])
    server.execute("DELETE FROM audit WHERE id = ?", [cut["id"]])
    # Close up the ids and rehash everything after the cut, oldest first,
    # relinking both chains, as a careful forger would.
    rows = server.query("SELECT * FROM audit WHERE id > ? ORDER BY id", [cut["id"]])
    heads = {r["recording_id"]: r["sha256"] for r in server.query(
        "SELECT recording_id, sha256 FROM audit WHERE recording_id IS NOT NULL AND id < ? ORDER BY id", [cut["id"]])}
    (server_previous,) = [r["sha256"] for r in server.query(
        "SELECT sha256 FROM audit WHERE prev_sha256 IS NOT NULL AND id < ? ORDER BY id DESC LIMIT 1", [cut["id"]])]
    server.execute("UPDATE audit SET id = -id WHERE id > ?", [cut["id"]])
    for row in rows:
        row = {**row, "id": row["id"] - 1, "detail": json.loads(row["detail"])}
        if row["recording_id"] is not None:
            row["recording_prev_sha256"] = heads.get(row["recording_id"], GENESIS)
        else:
            row["prev_sha256"] = server_previous
        row["sha256"] = entry_hash(row)
        if row["recording_id"] is not None:
            heads[row["recording_id"]] = row["sha256"]
        else:
            server_previous = row["sha256"]
        server.execute("UPDATE audit SET id = ?, prev_sha256 = ?, recording_prev_sha256 = ?, sha256 = ? WHERE id = ?",
                       [row["id"], row["prev_sha256"], row["recording_prev_sha256"], row["sha256"], -(row["id"] + 1)])
    for recording_id, sha in heads.items():
        server.execute("UPDATE audit_heads SET sha256 = ?, entry_id = (SELECT MAX(id) FROM audit WHERE recording_id = ?) "
                       "WHERE recording_id = ?", [sha, recording_id, recording_id])
    (newest,) = server.query("SELECT id, sha256 FROM audit WHERE prev_sha256 IS NOT NULL ORDER BY id DESC LIMIT 1")
    server.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", [f"{newest['id']}:{newest['sha256']}"])
    result = verify(server)
    assert result.returncode == 1
    assert f"anchor entry {anchor['id'] - 1} does not match the recordings' chain heads" in result.stderr, result.stderr


def test_deleting_the_newest_entries_and_resetting_the_heads_is_caught_by_the_log(stopped_server_with_history):
    """Forgery 4 of issue 14, with the database alone: the newest entries
    about a recording go, its recorded head is reset to what is left, and so
    is every head an audit check compares. The transparency log's leaves
    still commit to the deleted entries; and with the leaves and their
    hashes deleted too, the signed checkpoint names more leaves than are
    left."""
    server = stopped_server_with_history
    newest = server.query("SELECT * FROM audit WHERE recording_id = ? ORDER BY id DESC LIMIT 1",
                          [server.recording_id])[0]
    (before,) = server.query("SELECT id, sha256 FROM audit WHERE recording_id = ? AND id < ? ORDER BY id DESC LIMIT 1",
                             [server.recording_id, newest["id"]])
    # The newest rows go (the last chunk and any anchor after it), and every
    # recorded head is set to what is left: the chains alone now look whole.
    server.execute("DELETE FROM audit WHERE id >= ?", [newest["id"]])
    server.execute("UPDATE audit_heads SET entry_id = ?, sha256 = ? WHERE recording_id = ?",
                   [before["id"], before["sha256"], server.recording_id])
    (head,) = server.query("SELECT id, sha256 FROM audit WHERE prev_sha256 IS NOT NULL ORDER BY id DESC LIMIT 1")
    server.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", [f"{head['id']}:{head['sha256']}"])
    result = verify(server)
    assert result.returncode == 1
    assert f"which is gone (deleted)" in result.stderr and "transparency log" in result.stderr, result.stderr

    (leaf,) = server.query("SELECT idx FROM tlog_leaves WHERE audit_id = ?", [newest["id"]])
    server.execute("DELETE FROM tlog_leaves WHERE idx >= ?", [leaf["idx"]])
    result = verify(server)
    assert result.returncode == 1
    assert "is signed, but only" in result.stderr, result.stderr
