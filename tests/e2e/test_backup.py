"""`witness backup` while the server serves, and `witness restore` into a
fresh data folder (issue 12, item 8, embedded default): real servers
behind the front door, the real CLI."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid

import pytest
import requests

from ..support import Phone, ServerProcess, Staff

PASSWORD = "pw-bk-observer-correct-horse"
# These commands are for the embedded records: every server here keeps them
# in SQLite, whatever a run of the suite on PostgreSQL chooses for others.
EMBEDDED = {"WITNESS_DATABASE_URL": ""}
# The session's SeaweedFS has room for few buckets (each grows volumes of its
# own): share test_s3's, under prefixes of our own.
BUCKET = "witness-e2e"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("original"), WITNESS_MAX_CHUNK_BYTES=1024 * 1024, **EMBEDDED).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def observer(original) -> Staff:
    return Staff(original, "bk-observer", "observer")


@pytest.fixture(scope="module")
def finished(original, observer):
    """A recording that is complete and has its signed manifest, its pieces."""
    phone = Phone(original)
    recording = phone.create_recording()
    pieces = [f"second {i} of the encounter ".encode() * (200 + 7 * i) for i in range(6)]
    for i, piece in enumerate(pieces):
        final = i == len(pieces) - 1
        assert recording.put(i, recording.chunk(i, piece, final=final), final=final).status_code == 201
    original.wait_for(lambda: recording.status().json()["manifest_version"] == 1)
    return recording, pieces


@pytest.fixture(scope="module")
def ready_copy(original, finished) -> str:
    """A lawyer's copy request of the finished recording, built (ready)."""
    lawyer, custodian = Staff(original, "bk-lawyer", "lawyer"), Staff(original, "bk-custodian", "custodian")
    asked = requests.post(f"{original.url}/v1/recordings/{finished[0].id}/copy-requests", headers=lawyer.auth,
                          json={"case_reference": "People v. Doe", "purpose": "Disclosure"})
    assert asked.status_code == 201, asked.text
    request_id = asked.json()["request_id"]
    approved = requests.post(f"{original.url}/v1/copy-requests/{request_id}/approve", headers=custodian.auth,
                             json={"reason": "Subpoena 26-114"})
    assert approved.status_code == 200, approved.text
    original.wait_for(lambda: requests.get(f"{original.url}/v1/copy-requests/{request_id}",
                                           headers=lawyer.auth).json()["state"] == "ready")
    assert requests.get(f"{original.url}/v1/copy-requests/{request_id}/bundle", headers=lawyer.auth).status_code == 200
    return request_id


@pytest.fixture(scope="module")
def made_backup(original, observer, finished, ready_copy, tmp_path_factory):
    """A backup taken while another phone keeps uploading (online)."""
    folder = tmp_path_factory.mktemp("backups") / "first"
    phone = Phone(original)
    live = phone.create_recording()
    acknowledged, stop = [], threading.Event()

    def keep_filming():
        index = 0
        with requests.Session() as http:
            while not stop.is_set():
                body = live.chunk(index)
                answer = http.put(f"{original.url}/v1/recordings/{live.id}/chunks/{index}", data=body,
                                  headers={"Authorization": f"Bearer {phone.token}",
                                           "Content-Type": "application/octet-stream",
                                           "Content-Digest": _digest(body)})
                assert answer.status_code == 201, answer.text
                acknowledged.append((time.monotonic(), index))
                index += 1
                time.sleep(0.02)

    uploader = threading.Thread(target=keep_filming, daemon=True)
    uploader.start()
    original.wait_for(lambda: len(acknowledged) >= 20)
    began = time.monotonic()
    result = original.cli("backup", str(folder))
    ended = time.monotonic()
    original.wait_for(lambda: any(t > ended for t, _ in acknowledged))
    stop.set()
    uploader.join(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    # The server served while the backup ran: chunks were acknowledged meanwhile.
    assert sum(1 for t, _ in acknowledged if began < t < ended) >= 5
    return folder, live, [i for _, i in acknowledged], result


def _digest(body: bytes) -> str:
    from ..support import content_digest

    return content_digest(body)


def _put_as_a_phone_does(recording, index: int, body: bytes, final: bool) -> int:
    """Send a chunk, again after a 503 (the store failing for a moment), as
    phones do; the final status."""
    for _ in range(50):
        answer = recording.put(index, body, final=final)
        if answer.status_code != 503:
            return answer.status_code
        time.sleep(0.2)
    return answer.status_code


def _fresh(tmp_path, original, name="restored") -> ServerProcess:
    """A server's folders not yet started, with the original's keys (as
    restored from their own backup)."""
    server = ServerProcess(tmp_path / name, **EMBEDDED)
    server.root.mkdir(parents=True)
    shutil.copytree(original.keys_dir, server.keys_dir)
    return server


def _login(server) -> dict:
    answer = requests.post(server.url + "/v1/auth/login", json={"username": "bk-observer", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _manifest(server, recording_id, auth) -> tuple[bytes, bytes]:
    base = f"{server.url}/v1/recordings/{recording_id}"
    body, sig = requests.get(base + "/manifest", headers=auth), requests.get(base + "/manifest.sig", headers=auth)
    assert body.status_code == sig.status_code == 200
    return body.content, sig.content


def _openssl_verifies(folder, server, manifest: bytes, signature: bytes) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "signing.pub.pem").write_text(requests.get(server.url + "/v1/keys").json()["signing"]["public_key_pem"])
    (folder / "manifest.json").write_bytes(manifest)
    (folder / "manifest.sig").write_bytes(signature)
    result = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "signing.pub.pem", "-rawin",
                             "-in", "manifest.json", "-sigfile", "manifest.sig"],
                            cwd=folder, capture_output=True, text=True)
    return result.returncode == 0 and "Signature Verified Successfully" in result.stdout


def _holds_nothing(server: ServerProcess) -> None:
    """The data folder holds no records and no chunk files."""
    chunks = server.data_dir / "chunks"
    assert not chunks.exists() or not [p for p in chunks.rglob("*") if p.is_file()]
    records = server.data_dir / "witness.sqlite3"
    if records.exists():
        with sqlite3.connect(records) as db:
            for table in ("recordings", "chunks", "audit", "staff", "devices", "manifests"):
                assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table


def test_backup_while_serving_then_restore_gives_the_same_archive(original, observer, finished, made_backup,
                                                                  ready_copy, tmp_path):
    folder, live, acknowledged, result = made_backup
    recording, pieces = finished
    index = json.loads((folder / "BACKUP.json").read_text())
    assert index["format"] == "witness-sync-backup" and index["counts"]["recordings"] == 2
    assert index["counts"]["copy_requests"] == 1 and not (folder / "bundles").exists()
    # The snapshot holds the finished recording's 6 chunks and a prefix of the live one's.
    in_backup = index["counts"]["chunks"] - len(pieces)
    assert 20 <= in_backup < len(acknowledged)
    assert len(list((folder / "chunks" / live.id).iterdir())) == in_backup
    assert "audit: log intact" in result.stdout and "backup complete" in result.stdout
    # Never the keys, never bundles.
    names = {p.name for p in folder.rglob("*")}
    assert not names & {"hpke-private.pem", "token-secret", "signing-private.pem", "bundles"}
    assert not any((folder / "chunks").glob("*/.tmp-*"))

    auth = {"Authorization": f"Bearer {observer.token}"}
    before_status = recording.status().json()
    before_media = requests.get(f"{original.url}/v1/recordings/{recording.id}/media", headers=auth).content
    before_manifest = _manifest(original, recording.id, auth)
    assert before_media == b"".join(pieces)

    restored = _fresh(tmp_path, original)
    done = restored.cli("restore", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "backup verified" in done.stdout and "restore complete" in done.stdout
    restored.start()
    try:
        verified = restored.cli("audit-verify")
        assert verified.returncode == 0, verified.stderr
        assert "audit log intact" in verified.stdout
        auth2 = _login(restored)
        # The phone's own token works too: same keys, same device.
        status = requests.get(f"{restored.url}/v1/recordings/{recording.id}/status",
                              headers={"Authorization": f"Bearer {recording.phone.token}"})
        assert status.status_code == 200 and status.json() == before_status
        media = requests.get(f"{restored.url}/v1/recordings/{recording.id}/media", headers=auth2)
        assert media.status_code == 200 and media.content == before_media
        manifest = _manifest(restored, recording.id, auth2)
        assert manifest == before_manifest
        assert _openssl_verifies(tmp_path / "check", restored, *manifest)
        # The live recording holds exactly the chunks the snapshot named.
        live_media = requests.get(f"{restored.url}/v1/recordings/{live.id}/media", headers=auth2)
        assert live_media.content == b"".join(f"piece {i} ".encode() * 50 for i in range(in_backup))
        # Bundles are not in a backup: the ready request stays ready, its download asks for a new copy.
        lawyer = requests.post(restored.url + "/v1/auth/login",
                               json={"username": "bk-lawyer", "password": "pw-bk-lawyer-correct-horse"}).json()
        lawyer_auth = {"Authorization": f"Bearer {lawyer['access_token']}"}
        copy = requests.get(f"{restored.url}/v1/copy-requests/{ready_copy}", headers=lawyer_auth)
        assert copy.status_code == 200 and copy.json()["state"] == "ready"
        bundle = requests.get(f"{restored.url}/v1/copy-requests/{ready_copy}/bundle", headers=lawyer_auth)
        assert bundle.status_code == 409 and bundle.json()["error"] == "bundle_not_ready"
        assert "new copy" in bundle.text
    finally:
        restored.stop()


def test_restore_refuses_changed_backups_and_writes_nothing(original, made_backup, tmp_path):
    folder, live, _, _ = made_backup
    target = _fresh(tmp_path, original, "target")

    changed_chunk = tmp_path / "changed-chunk"
    shutil.copytree(folder, changed_chunk)
    victim = sorted((changed_chunk / "chunks" / live.id).iterdir())[3]
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = target.cli("restore", str(changed_chunk))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"recording {live.id} chunk 3" in result.stderr and "damaged" in result.stderr
    _holds_nothing(target)

    changed_records = tmp_path / "changed-records"
    shutil.copytree(folder, changed_records)
    records = changed_records / "witness.sqlite3"
    data = bytearray(records.read_bytes())
    data[-100] ^= 0x01
    records.write_bytes(bytes(data))
    result = target.cli("restore", str(changed_records))
    assert result.returncode == 1 and "records file" in result.stderr and "was changed" in result.stderr
    _holds_nothing(target)

    unfinished = tmp_path / "unfinished"
    shutil.copytree(folder, unfinished)
    (unfinished / "BACKUP.json").unlink()
    result = target.cli("restore", str(unfinished))
    assert result.returncode == 1 and "not a finished backup" in result.stderr
    _holds_nothing(target)

    # Other keys than the backed-up server's: its footage could not be decrypted.
    stranger = ServerProcess(tmp_path / "stranger", **EMBEDDED)
    result = stranger.cli("restore", str(folder))
    assert result.returncode == 2 and "keys" in result.stderr
    _holds_nothing(stranger)


def test_restore_refuses_a_data_folder_that_holds_records(original, made_backup, tmp_path):
    folder = made_backup[0]
    busy = _fresh(tmp_path, original, "busy")
    assert busy.cli("create-user", "someone", "--role", "observer", password=PASSWORD).returncode == 0
    result = busy.cli("restore", str(folder))
    assert result.returncode == 2 and "already holds records" in result.stderr
    with sqlite3.connect(busy.data_dir / "witness.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM recordings").fetchone()[0] == 0
    # A running server's folder is refused too.
    result = original.cli("restore", str(folder))
    assert result.returncode == 2 and "server is running" in result.stderr


def test_backup_refuses_a_folder_that_is_not_empty(original, made_backup):
    result = original.cli("backup", str(made_backup[0]))
    assert result.returncode == 2 and "not an empty folder" in result.stderr


def test_move_archive_puts_the_backup_into_postgresql_and_s3(original, finished, made_backup, seaweedfs,
                                                             tmp_path):
    from ..postgres import shared_cluster

    folder = made_backup[0]
    recording, pieces = finished
    index = json.loads((folder / "BACKUP.json").read_text())
    bucket, prefix = seaweedfs.bucket(BUCKET), f"moved-{uuid.uuid4()}"
    moved = ServerProcess(tmp_path / "moved", WITNESS_DATABASE_URL=shared_cluster().new_database(),
                          **seaweedfs.env(f"s3://{bucket}/{prefix}/"))
    moved.root.mkdir(parents=True)
    shutil.copytree(original.keys_dir, moved.keys_dir)
    # The embedded default is not a target: that is `restore`.
    assert _fresh(tmp_path, original, "not-postgres").cli("move-archive", str(folder)).returncode == 2
    done = moved.cli("move-archive", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit: log intact in PostgreSQL" in done.stdout
    assert len(seaweedfs.objects(bucket, f"{prefix}/chunks/{recording.id}/")) == len(pieces)
    assert moved.cli("move-archive", str(folder)).returncode == 2  # now it holds records
    # backup and restore are the embedded default's; PostgreSQL has its own tools.
    for command, where in (("backup", tmp_path / "of-postgres"), ("restore", folder)):
        refused = moved.cli(command, str(where))
        assert refused.returncode == 2 and "postgresql" in refused.stderr.lower(), refused.stderr
    moved.start()
    try:
        assert moved.cli("audit-verify").returncode == 0
        auth = _login(moved)
        status = requests.get(f"{moved.url}/v1/recordings/{recording.id}/status",
                              headers={"Authorization": f"Bearer {recording.phone.token}"})
        assert status.status_code == 200 and status.json() == recording.status().json()
        media = requests.get(f"{moved.url}/v1/recordings/{recording.id}/media", headers=auth)
        assert media.status_code == 200 and media.content == b"".join(pieces)
        manifest = _manifest(moved, recording.id, auth)
        assert manifest == _manifest(original, recording.id, auth)
        assert _openssl_verifies(tmp_path / "check", moved, *manifest)
        # New rows get new ids after the moved ones (identity columns advanced).
        Staff(moved, "bk-after-move", "observer")
        assert index["counts"]["staff"] + 1 == len(moved.query("SELECT id FROM staff"))
        assert moved.cli("audit-verify").returncode == 0
    finally:
        moved.stop()


def test_a_damaged_chunk_in_the_live_store_fails_the_backup_without_an_index(original, finished, tmp_path):
    recording, _ = finished
    victim = sorted((original.data_dir / "chunks" / recording.id).iterdir())[2]
    data = bytearray(victim.read_bytes())
    data[5] ^= 0xFF  # same size: only the hash shows it
    victim.write_bytes(bytes(data))
    folder = tmp_path / "damaged"
    result = original.cli("backup", str(folder))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"recording {recording.id} chunk 2" in result.stderr and "damaged" in result.stderr
    assert not (folder / "BACKUP.json").exists()


def test_backup_reads_chunks_from_s3_and_restore_puts_them_into_s3(tmp_path, seaweedfs):
    bucket, prefix = seaweedfs.bucket(BUCKET), f"backup-{uuid.uuid4()}"
    source = ServerProcess(tmp_path / "s3-original", **seaweedfs.env(f"s3://{bucket}/{prefix}/original/"),
                           **EMBEDDED).start()
    try:
        auth = {"Authorization": f"Bearer {Staff(source, 'bk-observer', 'observer').token}"}
        recording = Phone(source).create_recording()
        pieces = [f"s3 second {i} ".encode() * (300 + i) for i in range(4)]
        for i, piece in enumerate(pieces):
            final = i == len(pieces) - 1
            assert _put_as_a_phone_does(recording, i, recording.chunk(i, piece, final=final), final) == 201
        source.wait_for(lambda: recording.status().json()["manifest_version"] == 1)
        before_manifest = _manifest(source, recording.id, auth)
        folder = tmp_path / "s3-backup"
        made = source.cli("backup", str(folder))
        assert made.returncode == 0, made.stdout + made.stderr
        assert len(list((folder / "chunks" / recording.id).iterdir())) == len(pieces)
    finally:
        source.stop()

    restored = ServerProcess(tmp_path / "s3-restored", **seaweedfs.env(f"s3://{bucket}/{prefix}/restored/"),
                             **EMBEDDED)
    restored.root.mkdir(parents=True)
    shutil.copytree(source.keys_dir, restored.keys_dir)
    done = restored.cli("restore", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    objects = seaweedfs.objects(bucket, f"{prefix}/restored/chunks/{recording.id}/")
    assert len(objects) == len(pieces)
    assert not (restored.data_dir / "chunks").exists() or not any((restored.data_dir / "chunks").iterdir())
    restored.start()
    try:
        assert restored.cli("audit-verify").returncode == 0
        auth2 = _login(restored)
        media = requests.get(f"{restored.url}/v1/recordings/{recording.id}/media", headers=auth2)
        assert media.status_code == 200 and media.content == b"".join(pieces)
        assert _manifest(restored, recording.id, auth2) == before_manifest
    finally:
        restored.stop()
