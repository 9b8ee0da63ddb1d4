"""Copies for lawyers, end to end on a real server: a lawyer requests a copy,
a custodian approves or denies it, the scheduler builds the bundle, the
lawyer downloads it, and it verifies offline, with openssl alone following
VERIFY.md and with `witness-verify`; a single changed byte anywhere makes
`witness-verify` fail."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from sync.evidence.verify import verify_bundle
from tests.support import Phone, Staff, make_fragmented_mp4

VERIFY_SCRIPT = Path(sys.executable).with_name("witness-verify")
RECORD_SCRIPT = Path(sys.executable).with_name("witness-record")


@pytest.fixture(scope="module")
def people(server):
    made = server.cli("create-organisation", "other-org", "--name", "Another legal-aid group")
    assert made.returncode == 0, made.stderr
    return {
        "lawyer": Staff(server, "copy-lawyer", "lawyer"),
        "lawyer2": Staff(server, "copy-lawyer-two", "lawyer"),
        "custodian": Staff(server, "copy-custodian", "custodian"),
        "observer": Staff(server, "copy-observer", "observer"),
        "outsider": Staff(server, "copy-outside-lawyer", "lawyer", organisation="other-org"),
        "outside_custodian": Staff(server, "copy-outside-custodian", "custodian", organisation="other-org"),
    }


def ask_for_copy(server, lawyer, recording_id, **body) -> dict:
    body = {"case_reference": "People v. Doe, No. 26-CR-1234", "purpose": "Disclosure to defence counsel", **body}
    answer = requests.post(f"{server.url}/v1/recordings/{recording_id}/copy-requests", json=body, headers=lawyer.auth)
    assert answer.status_code == 201, answer.text
    return answer.json()


def decide(server, custodian, request_id, verdict, **body) -> requests.Response:
    return requests.post(f"{server.url}/v1/copy-requests/{request_id}/{verdict}", json=body, headers=custodian.auth)


def state_of(server, staff, request_id) -> dict:
    answer = requests.get(f"{server.url}/v1/copy-requests/{request_id}", headers=staff.auth)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_until_ready(server, staff, request_id) -> dict:
    return server.wait_for(lambda: (r := state_of(server, staff, request_id))["state"] in ("ready", "failed") and r)


def download(server, staff, request_id, path: Path) -> Path:
    answer = requests.get(f"{server.url}/v1/copy-requests/{request_id}/bundle", headers=staff.auth)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/zip"
    assert "attachment" in answer.headers["Content-Disposition"]
    path.write_bytes(answer.content)
    return path


def unzip(bundle: Path, into: Path) -> Path:
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(into)
    (folder,) = into.iterdir()
    return folder


@pytest.fixture(scope="module")
def gappy_bundle(server, people, tmp_path_factory):
    """A recording with a gap and two manifest versions (a late chunk),
    copied for a case: `(zip path, request, recording)`."""
    phone = Phone(server)
    recording = phone.create_recording()
    for index in (0, 1, 2, 4):
        assert recording.put(index, recording.chunk(index)).status_code in (200, 201)
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 1)  # idle: interrupted, gap at 3
    assert recording.put(5, recording.chunk(5, b"the end", final=True), final=True).status_code in (200, 201)
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 2)
    request = ask_for_copy(server, people["lawyer"], recording.id)
    assert decide(server, people["custodian"], request["request_id"], "approve").status_code == 200
    ready = wait_until_ready(server, people["lawyer"], request["request_id"])
    assert ready["state"] == "ready", ready
    path = download(server, people["lawyer"], request["request_id"],
                    tmp_path_factory.mktemp("gappy") / "bundle.zip")
    return path, ready, recording


def test_lawyer_path_from_witness_record_to_openssl(server, people, tmp_path):
    lawyer, custodian = people["lawyer"], people["custodian"]
    video = make_fragmented_mp4(tmp_path / "encounter.mp4", 4)
    run = subprocess.run([str(RECORD_SCRIPT), str(video), "--server", server.url, "--chunk-seconds", "0.5",
                          "--outbox", str(tmp_path / "phone")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    recording_id = run.stdout.strip()

    request = ask_for_copy(server, lawyer, recording_id)
    assert request["state"] == "pending" and request["requested_by"] == "copy-lawyer" and request["bundle"] is None
    not_yet = requests.get(f"{server.url}/v1/copy-requests/{request['request_id']}/bundle", headers=lawyer.auth)
    assert not_yet.status_code == 409 and not_yet.json()["error"] == "bundle_not_ready"
    refused = decide(server, lawyer, request["request_id"], "approve")
    assert refused.status_code == 403  # a lawyer cannot approve, not even their own request
    approved = decide(server, custodian, request["request_id"], "approve", reason="Subpoena 26-114 received")
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] in ("approved", "building", "ready")
    assert approved.json()["decided_by"] == "copy-custodian"
    ready = wait_until_ready(server, lawyer, request["request_id"])
    assert ready["state"] == "ready", ready
    again = decide(server, custodian, request["request_id"], "deny", reason="changed my mind")
    assert again.status_code == 409 and again.json()["error"] == "copy_request_not_pending"
    bundle = download(server, lawyer, request["request_id"], tmp_path / ready["bundle"]["filename"])
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == ready["bundle"]["sha256"]
    assert bundle.stat().st_size == ready["bundle"]["size"]

    verified = subprocess.run([str(VERIFY_SCRIPT), str(bundle)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "All 9 checks passed" in verified.stdout
    assert len(re.findall(r"^ ?\d+\. \[passed\]", verified.stdout, re.M)) == 9
    assert "People v. Doe" in verified.stdout

    folder = unzip(bundle, tmp_path / "unzipped")
    footage = (folder / "footage.mp4").read_bytes()
    assert footage == video.read_bytes()  # the original bytes: never re-encoded
    # Every openssl command VERIFY.md gives works as written, openssl alone.
    commands = [line for block in re.findall(r"```\n(.*?)```", (folder / "VERIFY.md").read_text(), re.S)
                for line in block.splitlines() if line.startswith("openssl ")]
    assert any("pkeyutl -verify" in c and "manifest.sig" in c for c in commands)
    assert any("ts -verify" in c and "manifest.tsr" in c for c in commands)
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=folder, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        if "pkeyutl -verify" in command:
            assert "Signature Verified Successfully" in done.stdout
        if "ts -verify" in command:
            assert "Verification: OK" in done.stdout
        if command.startswith("openssl dgst -sha256 footage.mp4"):
            assert hashlib.sha256(footage).hexdigest() in done.stdout
    # The time-stamp token and signature verify with openssl without VERIFY.md too.
    manifest = folder / "manifests" / "v1" / "manifest.json"
    assert json.loads(manifest.read_bytes())["footage"]["sha256"] == hashlib.sha256(footage).hexdigest()

    # What the bundle holds about people: pseudonymous device id, no
    # addresses, no passwords.
    device_id = json.loads(manifest.read_bytes())["device_id"]
    everything = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.suffix != ".mp4")
    assert b"127.0.0.1" not in everything
    assert all(s.password.encode() not in everything for s in people.values())
    assert device_id.encode() in everything
    certification = (folder / "CERTIFICATION.md").read_text()
    assert "902(14)" in certification and hashlib.sha256(footage).hexdigest() in certification
    assert "People v. Doe" in certification and "[full name]" in certification
    log = [json.loads(line) for line in (folder / "custody-log.jsonl").read_text().splitlines()]
    actions = [entry["action"] for entry in log]
    assert actions[0] == "recording.created" and "recording.finalized" in actions
    copy_steps = [entry["action"] for entry in log if entry["action"].startswith("copy.")]
    assert copy_steps == ["copy.requested", "copy.approved", "copy.build_started"], actions

    audit = requests.get(f"{server.url}/v1/audit", params={"recording_id": recording_id, "order": "asc"},
                         headers=custodian.auth).json()["entries"]
    assert [e["action"] for e in audit][-2:] == ["copy.ready", "copy.downloaded"]
    assert audit[-1]["actor"] == "staff:copy-lawyer"


def test_any_changed_byte_of_any_member_fails_verification(gappy_bundle, tmp_path):
    bundle, request, recording = gappy_bundle
    result = verify_bundle(bundle)
    assert result.first_failure is None, result.outcomes
    folder = unzip(bundle, tmp_path / "unzipped")
    assert verify_bundle(folder).first_failure is None
    manifest = json.loads((folder / "manifests" / "v2" / "manifest.json").read_bytes())
    assert manifest["gaps"] == [[3, 3]] and manifest["state"] == "interrupted"

    members = sorted(p for p in folder.rglob("*") if p.is_file())
    assert len(members) == 15  # footage, 2 x 3 manifest files, 2 keys, log + token, 2 texts, copy.json + sig
    for member in members:
        original = member.read_bytes()
        size = len(original)
        for position in sorted({0, 1, size // 3, size // 2, (2 * size) // 3, size - 2, size - 1}):
            changed = bytearray(original)
            changed[position] ^= 0x01
            member.write_bytes(bytes(changed))
            outcome = verify_bundle(folder)
            assert outcome.first_failure is not None, f"{member.relative_to(folder)} byte {position}"
        member.write_bytes(original)
    assert verify_bundle(folder).first_failure is None

    # The same through the zip, and the command's exit status.
    with zipfile.ZipFile(bundle) as source:
        names = [info.filename for info in source.infolist()]
        target = names[len(names) // 2]
        altered = io.BytesIO()
        with zipfile.ZipFile(altered, "w") as out:
            for name in names:
                data = bytearray(source.read(name))
                if name == target:
                    data[len(data) // 2] ^= 0xFF
                out.writestr(name, bytes(data))
    (tmp_path / "altered.zip").write_bytes(altered.getvalue())
    failed = subprocess.run([str(VERIFY_SCRIPT), str(tmp_path / "altered.zip")], capture_output=True, text=True,
                            timeout=60)
    assert failed.returncode == 1
    assert "NOT VERIFIED: check" in failed.stdout and target.split("/", 1)[1] in failed.stdout


def test_a_damaged_zip_is_reported_not_crashed_on(gappy_bundle, tmp_path):
    bundle, _, _ = gappy_bundle
    raw = bytearray(bundle.read_bytes())
    raw[len(raw) // 4] ^= 0xFF  # inside the footage's stored bytes: its CRC no longer matches
    (tmp_path / "damaged.zip").write_bytes(bytes(raw))
    done = subprocess.run([str(VERIFY_SCRIPT), str(tmp_path / "damaged.zip")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "NOT VERIFIED: check" in done.stdout


def test_each_check_names_what_was_changed(gappy_bundle, tmp_path):
    bundle, _, _ = gappy_bundle
    folder = unzip(bundle, tmp_path / "unzipped")

    def outcome(number: int):
        return verify_bundle(folder).outcomes[number - 1]

    (folder / "notes.txt").write_text("added later")
    assert outcome(2).status == "FAILED" and "notes.txt" in outcome(2).detail
    (folder / "notes.txt").unlink()

    log = folder / "custody-log.jsonl"
    original = log.read_bytes()
    lines = original.splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2] + lines[3:]))  # one entry removed
    assert outcome(9).status == "FAILED" and "does not link to the entry before it" in outcome(9).detail
    edited = json.loads(lines[2])
    edited["actor"] = "staff:someone-else"
    log.write_bytes(b"".join(lines[:2] + [json.dumps(edited, sort_keys=True, separators=(",", ":")).encode() + b"\n"]
                             + lines[3:]))
    assert outcome(9).status == "FAILED" and "was changed" in outcome(9).detail
    log.write_bytes(original)

    token = folder / "manifests" / "v1" / "manifest.tsr"
    original = token.read_bytes()
    token.write_bytes((folder / "manifests" / "v2" / "manifest.tsr").read_bytes())  # a real token, other data
    assert outcome(5).status == "FAILED" and "version 1" in outcome(5).detail
    token.unlink()
    assert outcome(5).status == "FAILED" and "missing" in outcome(5).detail
    token.write_bytes(original)
    assert verify_bundle(folder).first_failure is None

    missing = subprocess.run([str(VERIFY_SCRIPT), str(tmp_path / "nothing-here.zip")], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_denied_request_yields_nothing(server, people):
    lawyer, custodian = people["lawyer"], people["custodian"]
    phone = Phone(server)
    recording = phone.create_recording()
    recording.put(0, recording.chunk(0, b"only", final=True), final=True)
    request = ask_for_copy(server, lawyer, recording.id, purpose="Fishing")
    no_reason = decide(server, custodian, request["request_id"], "deny")
    assert no_reason.status_code == 400 and no_reason.json()["error"] == "invalid_reason"
    denied = decide(server, custodian, request["request_id"], "deny", reason="No case is open.")
    assert denied.status_code == 200 and denied.json()["state"] == "denied"
    assert denied.json()["decision_reason"] == "No case is open."
    late = decide(server, custodian, request["request_id"], "approve")
    assert late.status_code == 409 and late.json()["error"] == "copy_request_not_pending"
    # A request approved after the denial is built: the bundle job has run
    # since, and still made nothing for the denied one.
    control = ask_for_copy(server, lawyer, recording.id, purpose="Trial exhibit")
    decide(server, custodian, control["request_id"], "approve")
    assert wait_until_ready(server, lawyer, control["request_id"])["state"] == "ready"
    assert state_of(server, lawyer, request["request_id"])["state"] == "denied"
    assert state_of(server, lawyer, request["request_id"])["bundle"] is None
    answer = requests.get(f"{server.url}/v1/copy-requests/{request['request_id']}/bundle", headers=lawyer.auth)
    assert answer.status_code == 409 and answer.json()["error"] == "bundle_not_ready"
    assert [p.name for p in (server.data_dir / "bundles").iterdir()
            if p.name.startswith(request["request_id"])] == []
    log = requests.get(f"{server.url}/v1/audit", params={"recording_id": recording.id, "action": "copy.denied"},
                       headers=custodian.auth).json()["entries"]
    assert [(e["actor"], e["detail"]["reason"]) for e in log] == [("staff:copy-custodian", "No case is open.")]


def test_who_sees_which_requests(server, people, gappy_bundle):
    _, request, recording = gappy_bundle
    rid = request["request_id"]
    lawyer2, outsider = people["lawyer2"], people["outsider"]
    for staff in (people["outsider"], people["outside_custodian"], lawyer2):
        for path in (f"/v1/copy-requests/{rid}", f"/v1/copy-requests/{rid}/bundle"):
            answer = requests.get(server.url + path, headers=staff.auth)
            assert answer.status_code == 404 and answer.json()["error"] == "not_found", (staff.username, path)
    for verdict in ("approve", "deny"):
        answer = decide(server, people["outside_custodian"], rid, verdict, reason="mine now")
        assert answer.status_code == 404
    answer = requests.post(f"{server.url}/v1/recordings/{recording.id}/copy-requests", headers=outsider.auth,
                           json={"case_reference": "X", "purpose": "Y"})
    assert answer.status_code == 404

    own = ask_for_copy(server, lawyer2, recording.id, case_reference="Second case")
    def listed(staff, **params):
        answer = requests.get(f"{server.url}/v1/copy-requests", params=params, headers=staff.auth)
        assert answer.status_code == 200, answer.text
        return {r["request_id"] for r in answer.json()["copy_requests"]}
    assert rid not in listed(lawyer2) and own["request_id"] in listed(lawyer2)
    assert rid in listed(people["lawyer"]) and own["request_id"] not in listed(people["lawyer"])
    assert {rid, own["request_id"]} <= listed(people["custodian"])
    assert listed(people["custodian"], state="pending") >= {own["request_id"]}
    assert rid not in listed(people["custodian"], state="pending")
    assert listed(people["outside_custodian"]) == set()
    assert listed(people["custodian"], recording_id=recording.id) >= {rid, own["request_id"]}
    # Pages of one, newest first, follow each other without loss or repeat.
    paged, cursor = [], None
    for _ in range(50):
        page = requests.get(f"{server.url}/v1/copy-requests", headers=people["custodian"].auth,
                            params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        paged += [r["request_id"] for r in page["copy_requests"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(paged) == len(set(paged)) and set(paged) == listed(people["custodian"])
    # A HEAD shows the size but downloads nothing, so it is not audited.
    def downloads():
        return len(requests.get(f"{server.url}/v1/audit", headers=people["custodian"].auth,
                                params={"recording_id": recording.id, "action": "copy.downloaded"}).json()["entries"])
    before = downloads()
    head = requests.head(f"{server.url}/v1/copy-requests/{rid}/bundle", headers=people["lawyer"].auth)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == request["bundle"]["size"]
    assert downloads() == before
    # A custodian may fetch a ready bundle of their organisation too.
    fetched = requests.get(f"{server.url}/v1/copy-requests/{rid}/bundle", headers=people["custodian"].auth)
    assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() == request["bundle"]["sha256"]


@pytest.mark.parametrize("body, code", [
    ({"purpose": "x"}, "invalid_case_reference"),
    ({"case_reference": "  ", "purpose": "x"}, "invalid_case_reference"),
    ({"case_reference": "a\nb", "purpose": "x"}, "invalid_case_reference"),
    ({"case_reference": "x" * 201, "purpose": "x"}, "invalid_case_reference"),
    ({"case_reference": "ok"}, "invalid_purpose"),
    ({"case_reference": "ok", "purpose": 7}, "invalid_purpose"),
    ({"case_reference": "ok", "purpose": "x" * 2001}, "invalid_purpose"),
    ({"case_reference": "ok", "purpose": "bell\x07"}, "invalid_purpose"),
])
def test_request_fields_are_validated(server, people, body, code):
    phone = Phone(server)
    recording = phone.create_recording()
    answer = requests.post(f"{server.url}/v1/recordings/{recording.id}/copy-requests", json=body,
                           headers=people["lawyer"].auth)
    assert answer.status_code == 400 and answer.json()["error"] == code
    listed = requests.get(f"{server.url}/v1/copy-requests", params={"recording_id": recording.id},
                          headers=people["custodian"].auth).json()["copy_requests"]
    assert listed == []  # nothing partial was kept


def test_only_lawyers_request_and_only_custodians_decide(server, people):
    phone = Phone(server)
    recording = phone.create_recording()
    body = {"case_reference": "ok", "purpose": "ok"}
    for role in ("observer", "custodian"):
        answer = requests.post(f"{server.url}/v1/recordings/{recording.id}/copy-requests", json=body,
                               headers=people[role].auth)
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
    answer = requests.get(f"{server.url}/v1/copy-requests", headers=people["observer"].auth)
    assert answer.status_code == 403
    answer = requests.get(f"{server.url}/v1/copy-requests/not-a-uuid", headers=people["lawyer"].auth)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request_id"


def test_an_approval_can_be_withdrawn_before_its_build(server, people):
    phone = Phone(server)
    recording = phone.create_recording()  # no manifest yet: the approval waits
    request = ask_for_copy(server, people["lawyer"], recording.id)
    decide(server, people["custodian"], request["request_id"], "approve")
    withdrawn = decide(server, people["custodian"], request["request_id"], "deny", reason="Subpoena quashed")
    assert withdrawn.status_code == 200 and withdrawn.json()["state"] == "denied"
    recording.put(0, recording.chunk(0, b"late footage", final=True), final=True)
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 1)
    control = ask_for_copy(server, people["lawyer"], recording.id)
    decide(server, people["custodian"], control["request_id"], "approve")
    assert wait_until_ready(server, people["lawyer"], control["request_id"])["state"] == "ready"
    assert state_of(server, people["lawyer"], request["request_id"])["state"] == "denied"


def test_another_requests_details_stay_out_of_a_bundle(server, people, tmp_path):
    phone = Phone(server)
    recording = phone.create_recording()
    recording.put(0, recording.chunk(0, b"footage", final=True), final=True)
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 1)
    secret = ask_for_copy(server, people["lawyer2"], recording.id, case_reference="Secret matter 99",
                          purpose="private strategy")
    decide(server, people["custodian"], secret["request_id"], "deny", reason="conflict of interest")
    mine = ask_for_copy(server, people["lawyer"], recording.id)
    decide(server, people["custodian"], mine["request_id"], "approve")
    assert wait_until_ready(server, people["lawyer"], mine["request_id"])["state"] == "ready"
    bundle = download(server, people["lawyer"], mine["request_id"], tmp_path / "mine.zip")
    with zipfile.ZipFile(bundle) as zf:
        everything = b"".join(zf.read(name) for name in zf.namelist())
        (log_name,) = [n for n in zf.namelist() if n.endswith("custody-log.jsonl")]
        log = [json.loads(line) for line in zf.read(log_name).splitlines()]
    for private in (b"Secret matter 99", b"private strategy", b"conflict of interest"):
        assert private not in everything
    withheld = [(e["action"], e["actor"]) for e in log if e.get("detail_withheld")]
    assert withheld == [("copy.requested", "staff:copy-lawyer-two"), ("copy.denied", "staff:copy-custodian")]
    result = verify_bundle(bundle)
    assert result.first_failure is None, result.outcomes
    assert "2 about other copy requests" in result.outcomes[8].detail


def test_a_zip_with_two_files_of_one_name_fails(gappy_bundle, tmp_path):
    bundle, _, _ = gappy_bundle
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(forged, "w") as out:
        names = source.namelist()
        (footage,) = [n for n in names if n.rsplit("/", 1)[1].startswith("footage.")]
        out.writestr(footage, b"TAMPERED " + source.read(footage)[9:])  # what `unzip -n` would keep
        with pytest.warns(UserWarning, match="Duplicate name"):
            for name in names:
                out.writestr(name, source.read(name))
    result = verify_bundle(forged)
    assert result.outcomes[1].status == "FAILED" and "two files named" in result.outcomes[1].detail


def test_a_request_waits_for_the_first_manifest(server, people):
    phone = Phone(server)
    recording = phone.create_recording()
    request = ask_for_copy(server, people["lawyer"], recording.id)
    decide(server, people["custodian"], request["request_id"], "approve")
    assert state_of(server, people["lawyer"], request["request_id"])["state"] == "approved"  # nothing to copy yet
    recording.put(0, recording.chunk(0, b"late footage", final=True), final=True)
    ready = wait_until_ready(server, people["lawyer"], request["request_id"])
    assert ready["state"] == "ready" and ready["manifest_version"] == 1


def test_verifier_needs_no_network(gappy_bundle, tmp_path):
    """witness-verify runs in a process whose every socket call fails."""
    bundle, _, _ = gappy_bundle
    guard = tmp_path / "sitecustomize.py"
    guard.write_text("import socket\n"
                     "def _refuse(*a, **k):\n    raise OSError('network use is not allowed')\n"
                     "socket.socket.connect = _refuse\nsocket.create_connection = _refuse\n"
                     "socket.getaddrinfo = _refuse\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(VERIFY_SCRIPT), str(bundle)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_damaged_chunk_fails_the_build_and_approving_again_copies_the_gap(server, people):
    lawyer, custodian = people["lawyer"], people["custodian"]
    phone = Phone(server)
    recording = phone.create_recording()
    for index in range(3):
        recording.put(index, recording.chunk(index, final=index == 2), final=index == 2)
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 1)
    # The disk damages chunk 1 after it was acknowledged and signed for.
    (stored,) = (server.data_dir / "chunks" / recording.id).glob("0000000001-*")
    damaged = bytearray(stored.read_bytes())
    damaged[10] ^= 0xFF
    stored.write_bytes(bytes(damaged))

    request = ask_for_copy(server, lawyer, recording.id)
    decide(server, custodian, request["request_id"], "approve")
    failed = wait_until_ready(server, lawyer, request["request_id"])
    assert failed["state"] == "failed" and "chunk 1" in failed["failure"] and failed["bundle"] is None
    answer = requests.get(f"{server.url}/v1/copy-requests/{request['request_id']}/bundle", headers=lawyer.auth)
    assert answer.status_code == 409 and answer.json()["error"] == "bundle_not_ready"
    # The damage made the recording due again: version 2 lists chunk 1 as a gap.
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 2)
    again = decide(server, custodian, request["request_id"], "approve", reason="retry after the gap was signed")
    assert again.status_code == 200 and again.json()["failure"] is None
    ready = wait_until_ready(server, lawyer, request["request_id"])
    assert ready["state"] == "ready" and ready["manifest_version"] == 2
    with zipfile.ZipFile(io.BytesIO(requests.get(f"{server.url}/v1/copy-requests/{request['request_id']}/bundle",
                                                 headers=lawyer.auth).content)) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith("manifests/v2/manifest.json")]
        assert json.loads(zf.read(name))["gaps"] == [[1, 1]]
        (log_name,) = [n for n in zf.namelist() if n.endswith("custody-log.jsonl")]
        actions = [json.loads(line)["action"] for line in zf.read(log_name).splitlines()]
    assert actions.count("copy.approved") == 2 and "copy.failed" in actions and "chunk.damaged" in actions
