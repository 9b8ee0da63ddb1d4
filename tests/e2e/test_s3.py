"""End to end with chunks and copy bundles on S3: a real server started with
`WITNESS_CHUNK_STORE=s3://...` against a real SeaweedFS. Representative
tests of the file-backed modules run again here unchanged (finalization and
manifests, media ranges, a lawyer's copy from `witness-record` to
`witness-verify` and openssl), beside what only S3 can show: where the
bytes are, kill -9 mid-upload, and the store going down and coming back."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import uuid

import pytest
import requests

from sync.archive import Archive
from sync.domain import ingest
from sync.domain.reconcile import reconcile_storage
from sync.settings import Settings

from ..services import S3_TEST_ENV, SeaweedFS
from ..support import Phone, ServerProcess, Staff, content_digest
from ..sync.test_races import new_recording, put
# Run here again, against the S3 server below (pytest collects them in this module too).
from .test_copies import people, test_lawyer_path_from_witness_record_to_openssl  # noqa: F401
from .test_copies import ask_for_copy, decide, wait_until_ready
from .test_finalize import observer  # noqa: F401
from .test_finalize import (  # noqa: F401
    test_complete_recording_gets_a_signed_manifest_that_openssl_verifies,
    test_idle_recording_is_interrupted_with_its_gaps_then_a_late_chunk_makes_version_2,
    test_media_honours_ranges,
)

BUCKET = "witness-e2e"


@pytest.fixture(scope="module")
def bucket(seaweedfs) -> str:
    return seaweedfs.bucket(BUCKET)


@pytest.fixture(scope="module")
def server(tmp_path_factory, seaweedfs, bucket):
    """The module's server (as conftest's `server`), keeping chunks and
    bundles under a prefix of its own in the bucket; `.prefix` names it."""
    prefix = f"e2e-{uuid.uuid4()}/"
    process = ServerProcess(tmp_path_factory.mktemp("s3-server"), WITNESS_MAX_CHUNK_BYTES=1024 * 1024,
                            **seaweedfs.env(f"s3://{bucket}/{prefix}"))
    process.prefix = prefix
    process.start()
    yield process
    process.stop()


def chunk_objects(seaweedfs, server, recording_id) -> dict[str, bytes]:
    base = f"{server.prefix}chunks/{recording_id}/"
    return {key[len(base):]: data for key, data in seaweedfs.objects(BUCKET, base).items()}


def held_rows(server, recording_id) -> list[int]:
    with sqlite3.connect(server.data_dir / "witness.sqlite3") as db:
        return [r[0] for r in db.execute("SELECT idx FROM chunks WHERE recording_id = ? ORDER BY idx", [recording_id])]


def test_chunks_are_objects_exactly_as_received_and_nothing_is_on_local_disk(server, seaweedfs):
    recording = Phone(server).create_recording()
    first = recording.chunk(0, b"the real footage")
    created = recording.put(0, first)
    assert created.status_code == 201
    name = ingest.chunk_file_name(0, hashlib.sha256(first).hexdigest())
    assert chunk_objects(seaweedfs, server, recording.id) == {name: first}
    again = recording.put(0, first)
    assert again.status_code == 200 and again.json() == created.json()
    conflict = recording.put(0, recording.chunk(0, b"a replacement"))
    assert conflict.status_code == 409 and conflict.json()["error"] == "chunk_conflict"
    damaged = recording.put(1, recording.chunk(1), digest=content_digest(b"other bytes"))
    assert damaged.status_code == 400 and damaged.json()["error"] == "digest_mismatch"
    unreadable = recording.put(1, recording.chunk(2))
    assert unreadable.status_code == 422 and unreadable.json()["error"] == "chunk_unreadable"
    # The first bytes are kept, and nothing is left of the refused ones.
    assert chunk_objects(seaweedfs, server, recording.id) == {name: first}
    assert held_rows(server, recording.id) == [0]
    assert not (server.data_dir / "chunks").exists() and not (server.data_dir / "bundles").exists()


def test_a_bundle_is_kept_in_the_bucket_and_downloads_by_range(server, seaweedfs, people):
    recording = Phone(server).create_recording()
    for index in range(3):
        assert recording.put(index, recording.chunk(index, final=index == 2), final=index == 2).status_code == 201
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 1)
    request = ask_for_copy(server, people["lawyer"], recording.id)
    assert decide(server, people["custodian"], request["request_id"], "approve").status_code == 200
    ready = wait_until_ready(server, people["lawyer"], request["request_id"])
    assert ready["state"] == "ready", ready
    stored = seaweedfs.objects(BUCKET, f"{server.prefix}bundles/{request['request_id']}.zip")
    (zipped,) = stored.values()
    assert hashlib.sha256(zipped).hexdigest() == ready["bundle"]["sha256"]
    url = f"{server.url}/v1/copy-requests/{request['request_id']}/bundle"
    assert requests.get(url, headers=people["lawyer"].auth).content == zipped
    part = requests.get(url, headers={**people["lawyer"].auth, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == zipped[100:200]
    assert not any(p.is_file() for p in (server.data_dir / "scratch").iterdir())  # the scratch zip is gone


def test_every_acknowledged_chunk_survives_kill_9_mid_upload(tmp_path, seaweedfs, bucket):
    server = ServerProcess(tmp_path / "server", **seaweedfs.env(f"s3://{bucket}/kill-{uuid.uuid4()}")).start()
    try:
        recordings = [Phone(server).create_recording() for _ in range(4)]
        acked: dict[str, dict[int, bytes]] = {r.id: {} for r in recordings}
        stop = threading.Event()

        def upload(recording):
            session = requests.Session()
            for index in range(300):
                if stop.is_set():
                    return
                piece = os.urandom(32 * 1024)
                body = recording.chunk(index, piece)
                try:
                    answer = session.put(f"{server.url}/v1/recordings/{recording.id}/chunks/{index}", data=body,
                                         headers={**recording.phone.auth, "Content-Type": "application/octet-stream",
                                                  "Content-Digest": content_digest(body)}, timeout=10)
                except requests.RequestException:
                    return  # the server is gone; what was acknowledged must be safe
                if answer.status_code == 201:
                    acked[recording.id][index] = piece

        threads = [threading.Thread(target=upload, args=(r,)) for r in recordings]
        for thread in threads:
            thread.start()
        server.wait_for(lambda: sum(len(a) for a in acked.values()) >= 80, timeout=60, interval=0.01)
        server.kill()  # SIGKILL to nginx, both pools, every worker, mid-stream
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        server.kill()

    restarted = ServerProcess(server.root, idle_seconds=1, **server._env_overrides)
    restarted.port, restarted.url = server.port, server.url
    restarted.start()
    try:
        staff = Staff(restarted, "s3-kill-observer", "observer")
        for recording in recordings:
            restarted.wait_for(lambda r=recording: r.status(token=staff.token).json()["manifest_version"])
            manifest = json.loads(requests.get(f"{restarted.url}/v1/recordings/{recording.id}/manifest",
                                               headers=staff.auth).content)
            held = {c["index"]: c for c in manifest["chunks"]}
            assert set(acked[recording.id]) <= set(held), "an acknowledged chunk was lost"
            footage = requests.get(f"{restarted.url}/v1/recordings/{recording.id}/media", headers=staff.auth).content
            offset = 0
            for index in sorted(held):
                if index in acked[recording.id]:
                    assert footage[offset:offset + held[index]["size"]] == acked[recording.id][index]
                offset += held[index]["size"]
            assert offset == len(footage)
    finally:
        restarted.kill()


def test_the_store_down_is_503_with_retry_after_and_the_phones_retry_is_acknowledged(tmp_path):
    store = SeaweedFS(tmp_path / "seaweedfs").start()
    server = None
    try:
        bucket = store.bucket("witness-down")
        server = ServerProcess(tmp_path / "server", **store.env(f"s3://{bucket}/down")).start()
        recording = Phone(server).create_recording()
        assert recording.put(0, recording.chunk(0, b"before")).status_code == 201
        store.stop()  # SIGKILL, while the phone is filming

        answer = recording.put(1, recording.chunk(1, b"while the store is down"))
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "server_busy" and int(answer.headers["Retry-After"]) >= 1
        assert recording.status().json()["received"] == [[0, 0]]  # nothing acknowledged, no row
        not_ready = server.wait_for(lambda: (r := requests.get(server.url + "/readyz")).status_code == 503 and r.json())
        assert not_ready["checks"]["chunk_store"] == "failing"

        store.start()
        retry = recording.put(1, recording.chunk(1, b"while the store is down"))
        assert retry.status_code == 201, retry.text
        assert recording.status().json()["received"] == [[0, 1]]
        names = sorted(key.rsplit("/", 1)[1][:10] for key in store.objects(bucket, f"down/chunks/{recording.id}/"))
        assert names == ["0000000000", "0000000001"]
        staff = Staff(server, "s3-down-observer", "observer")
        media = requests.get(f"{server.url}/v1/recordings/{recording.id}/media", headers=staff.auth)
        assert media.content == b"before" + b"while the store is down"
    finally:
        if server is not None:
            server.kill()
        store.stop()


def test_reconciliation_on_s3_removes_leftovers_and_forgets_lost_chunks(tmp_path, seaweedfs, bucket, monkeypatch):
    for name, value in S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    prefix = f"reconcile-{uuid.uuid4()}/"
    archive = Archive(Settings(data_dir=tmp_path / "data", keys_dir=tmp_path / "keys",
                               chunk_store=f"s3://{bucket}/{prefix}", s3_endpoint_url=seaweedfs.endpoint_url))
    device_id, recording_id, key = new_recording(archive)
    receipts = [put(archive, device_id, recording_id, key, index)[0] for index in range(3)]
    names = [ingest.chunk_file_name(i, r["sha256"]) for i, r in enumerate(receipts)]
    client = seaweedfs.client()
    client.delete_object(Bucket=bucket, Key=f"{prefix}chunks/{recording_id}/{names[1]}")  # lost
    orphan = ingest.chunk_file_name(7, "ab" * 32)  # stored, never committed
    archive.chunks.put(recording_id, orphan, b"never acknowledged")
    stranger = str(uuid.uuid4())
    archive.chunks.put(stranger, ingest.chunk_file_name(0, "cd" * 32), b"no recording at all")

    young = reconcile_storage(archive)  # within the grace period: leftovers may be uploads in flight
    assert young.orphan_files_removed == [] and young.lost_chunks == [(recording_id, 1)]
    report = reconcile_storage(archive, grace_seconds=0)
    assert sorted(report.orphan_files_removed) == sorted([(recording_id, orphan),
                                                          (stranger, ingest.chunk_file_name(0, "cd" * 32))])
    assert [c.name for c in archive.chunks.list_chunks(recording_id)] == [names[0], names[2]]
    assert archive.chunks.list_chunks(stranger) == []
    assert ingest.recording_status(archive, recording_id)["missing"] == [[1, 1]]
    lost = archive.database.query("SELECT detail FROM audit WHERE action = 'chunk.lost'")
    assert [json.loads(row["detail"])["index"] for row in lost] == [1]
    # The phone resumes from status and sends it again.
    assert put(archive, device_id, recording_id, key, 1)[1] is True
