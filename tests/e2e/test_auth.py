"""Keys, device registration, staff login, refresh, and the append-only rule
for device tokens, through a real server."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto.signing import public_key_pem

from ..support import Phone, ServerProcess, Staff


def test_keys_are_public_only_and_files_private(server):
    keys = requests.get(server.url + "/v1/keys").json()
    assert keys["hpke"]["suite"] == "X25519-HKDF-SHA256-AES-256-GCM"
    assert len(keys["hpke"]["public_key"]) == 43  # 32 bytes, base64url unpadded
    assert keys["signing"]["alg"] == "Ed25519"
    serialization.load_pem_public_key(keys["signing"]["public_key_pem"].encode())
    assert "PRIVATE" not in str(keys)
    assert stat.S_IMODE(server.keys_dir.stat().st_mode) == 0o700
    files = list(server.keys_dir.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert not any(server.data_dir.rglob("*.pem"))


def test_device_registration_is_anonymous_and_open_by_default(server):
    answer = requests.post(server.url + "/v1/devices", json={})
    assert answer.status_code == 201
    assert set(answer.json()) == {"device_id", "access_token", "refresh_token"}
    empty = requests.post(server.url + "/v1/devices")
    assert empty.status_code == 201


def test_unknown_enrollment_code_is_refused(server):
    answer = requests.post(server.url + "/v1/devices", json={"enrollment_code": "guess"})
    assert answer.status_code == 403 and answer.json()["error"] == "enrollment_refused"


def test_enrollment_code_made_by_the_operator_works(server):
    code = server.cli("enrollment-code", "--note", "march 12").stdout.strip()
    answer = requests.post(server.url + "/v1/devices", json={"enrollment_code": code})
    assert answer.status_code == 201


def test_refresh_gives_a_working_access_token(server):
    phone = Phone(server)
    answer = requests.post(server.url + "/v1/auth/refresh",
                           headers={"Authorization": f"Bearer {phone.refresh_token}"})
    assert answer.status_code == 200
    phone.token = answer.json()["access_token"]
    phone.create_recording()


def test_access_token_cannot_refresh_and_refresh_token_cannot_upload(server):
    phone = Phone(server)
    wrong = requests.post(server.url + "/v1/auth/refresh", headers=phone.auth)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_token"
    body, _ = phone.recording_body()
    answer = requests.post(server.url + "/v1/recordings", json=body,
                           headers={"Authorization": f"Bearer {phone.refresh_token}"})
    assert answer.status_code == 401


def test_missing_and_garbage_tokens_are_json_401(server):
    for headers in ({}, {"Authorization": "Bearer not.a.jwt"}, {"Authorization": "Basic abc"}):
        answer = requests.post(server.url + "/v1/recordings", json={}, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"] in ("unauthorized", "invalid_token")


def test_device_token_can_neither_read_nor_list_footage(server):
    phone = Phone(server)
    recording = phone.create_recording()
    recording.put(0, recording.chunk(0, final=True), final=True)
    base = f"{server.url}/v1/recordings/{recording.id}"
    for url in (base + "/manifest", base + "/manifest.sig", base + "/media"):
        answer = requests.get(url, headers=phone.auth)
        assert answer.status_code == 403, url
        assert answer.json()["error"] == "forbidden"
    # Nothing lets a device alter or delete what it sent.
    for method in ("DELETE", "PATCH"):
        answer = requests.request(method, base + "/chunks/0", headers=phone.auth)
        assert answer.status_code == 405 and answer.json()["error"] == "method_not_allowed"
    assert requests.delete(base, headers=phone.auth).status_code in (404, 405)  # no such route today
    assert recording.status().json()["received"] == [[0, 0]]  # and nothing was destroyed


def test_staff_login_and_the_same_answer_for_unknown_users(server):
    server.staff_token("rosa", "observer")
    good = requests.post(server.url + "/v1/auth/login",
                         json={"username": "rosa", "password": "pw-rosa-correct-horse"})
    assert good.status_code == 200 and set(good.json()) == {"access_token", "refresh_token"}
    wrong_password = requests.post(server.url + "/v1/auth/login", json={"username": "rosa", "password": "x" * 14})
    no_such_user = requests.post(server.url + "/v1/auth/login", json={"username": "nobody", "password": "x" * 14})
    assert wrong_password.status_code == no_such_user.status_code == 401
    assert wrong_password.json() == no_such_user.json() == {"error": "bad_credentials",
                                                            "message": wrong_password.json()["message"]}


def test_staff_cannot_upload(server):
    token = server.staff_token("lena", "lawyer")
    body, _ = Phone(server).recording_body()
    answer = requests.post(server.url + "/v1/recordings", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 403


def test_staff_can_read_status(server):
    recording = Phone(server).create_recording()
    token = server.staff_token("omar", "custodian")
    assert recording.status(token=token).status_code == 200


def test_unknown_route_and_method_are_json(server):
    answer = requests.get(server.url + "/nope")
    assert answer.status_code == 404 and answer.headers["Content-Type"].startswith("application/json")


def test_chunked_registration_body_is_read(server):
    body = json.dumps({"enrollment_code": "not-a-code", "public_key_pem": public_key_pem(
        Ed25519PrivateKey.generate().public_key())}).encode()
    answer = requests.post(server.url + "/v1/devices", data=iter([body[:20], body[20:]]),
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 403 and answer.json()["error"] == "enrollment_refused"


def test_oversized_json_body_is_refused_even_when_chunked(server):
    body = b'{"username": "' + b"a" * 100_000 + b'", "password": "x"}'
    answer = requests.post(server.url + "/v1/auth/login", data=iter([body[:50_000], body[50_000:]]),
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"] == "body_too_large"


def test_concurrent_logins_all_finish_and_uploads_go_on(server):
    server.staff_token("busy-observer", "observer")
    attempts = [("busy-observer", "pw-busy-observer-correct-horse")] * 2 + \
               [(f"nobody-{i}", "x" * 14) for i in range(6)]
    with ThreadPoolExecutor(len(attempts)) as pool:
        answers = list(pool.map(lambda a: requests.post(server.url + "/v1/auth/login",
                                                        json={"username": a[0], "password": a[1]}, timeout=60),
                                attempts))
    assert [a.status_code for a in answers] == [200, 200] + [401] * 6
    recording = Phone(server).create_recording()
    assert recording.put(0, recording.chunk(0)).status_code == 201


def test_deeply_nested_json_is_a_400(server):
    phone = Phone(server)
    body = "[" * 20000 + "]" * 20000
    answer = requests.post(server.url + "/v1/recordings", data=body,
                           headers={**phone.auth, "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_body"


def test_redirects_never_name_the_host_a_request_claims(server):
    """Every Location is a path on this server, whatever Host was sent: a
    forged Host must not send a browser (or a cache) elsewhere."""
    forged = {"Host": "evil.example"}
    seen = []
    for method, path in (("GET", "/console"), ("GET", "/console/"), ("GET", "/console//people"),
                         ("GET", "/v1//keys"), ("GET", "/console/recordings"), ("POST", "/console/logout")):
        answer = requests.request(method, server.url + path, headers=forged, allow_redirects=False)
        if answer.is_redirect:
            seen.append(path)
            location = answer.headers["Location"]
            assert location.startswith("/") and not location.startswith("//"), (path, location)
            assert "evil.example" not in location, (path, location)
    assert "/console" in seen and "/console//people" in seen and "/console/recordings" in seen, seen


def test_the_records_file_and_its_journals_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)  # the server inherits it: files it makes without care come out 0644 or 0666
    try:
        # The SQLite file's own modes, whichever records the other tests use.
        server = ServerProcess(tmp_path / "umask", workers=1, WITNESS_DATABASE_URL="").start()
    finally:
        os.umask(old)
    try:
        recording = Phone(server).create_recording()  # writes: the WAL and the shared-memory file exist
        assert recording.put(0, recording.chunk(0)).status_code == 201
        records = sorted(server.data_dir.glob("witness.sqlite3*"))
        names = {path.name for path in records}
        assert {"witness.sqlite3", "witness.sqlite3-wal", "witness.sqlite3-shm"} <= names, names
        modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in records}
        assert set(modes.values()) == {"0o600"}, modes
        assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    finally:
        server.stop()


def test_an_earlier_releases_records_file_is_made_private_at_start(tmp_path):
    data = tmp_path / "old" / "data"
    data.mkdir(parents=True, mode=0o700)
    for name in ("witness.sqlite3", "witness.sqlite3-wal", "witness.sqlite3-shm"):
        (data / name).touch(mode=0o644)
        os.chmod(data / name, 0o644)
    server = ServerProcess(tmp_path / "old", workers=1, WITNESS_DATABASE_URL="").start()  # SQLite's files
    try:
        modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in data.glob("witness.sqlite3*")}
        assert set(modes.values()) == {"0o600"}, modes
    finally:
        server.stop()


def test_a_token_already_verified_is_still_refused_once_its_device_is_revoked(server):
    # Every worker that served the phone remembers its verified token; the
    # revocation still stops the very next request.
    phone = Phone(server)
    recording = phone.create_recording()
    for index in range(6):  # reach (and so remember the token in) every ingest worker
        assert recording.put(index, recording.chunk(index)).status_code == 201
    custodian = Staff(server, "revoking-custodian", "custodian")
    revoked = requests.post(f"{server.url}/v1/devices/{phone.device_id}/revoke", headers=custodian.auth)
    assert revoked.status_code in (200, 204), revoked.text
    for index in range(6, 12):
        answer = recording.put(index, recording.chunk(index))
        assert (answer.status_code, answer.json()["error"]) == (401, "token_revoked")
    assert recording.status(token=custodian.token).json()["received"] == [[0, 5]]


def test_a_token_already_verified_is_refused_once_it_expires(server):
    phone = Phone(server)
    recording = phone.create_recording()
    short = server.forged_token(f"device:{phone.device_id}", "device", expires_in=3, sid=str(uuid.uuid4()))
    headers = {"Authorization": f"Bearer {short}"}
    for index in range(4):
        assert recording.put(index, recording.chunk(index), token=short).status_code == 201
    time.sleep(3.5)
    late = requests.get(f"{server.url}/v1/recordings/{recording.id}/status", headers=headers)
    assert (late.status_code, late.json()["error"]) == (401, "token_expired")
    assert recording.put(4, recording.chunk(4), token=short).json()["error"] == "token_expired"
