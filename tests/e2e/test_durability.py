"""What an acknowledgement promises, tested by force: kill -9 of the server
mid-upload, files lost or left over while it was down, a full disk, and the
scheduler running exactly once however many workers serve."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest
import requests

from ..support import Phone, ServerProcess, content_digest


def staff(server, name="dur-observer"):
    return {"Authorization": f"Bearer {server.staff_token(name, 'observer')}"}


def test_every_acknowledged_chunk_survives_kill_9_during_concurrent_uploads(fresh_server):
    server = fresh_server.start()
    phones = [Phone(server) for _ in range(6)]
    recordings = [phone.create_recording() for phone in phones]
    acked: dict[str, dict[int, dict]] = {r.id: {} for r in recordings}
    plaintexts: dict[str, dict[int, bytes]] = {r.id: {} for r in recordings}
    stop = threading.Event()

    def upload(recording):
        session = requests.Session()
        for index in range(400):
            if stop.is_set():
                return
            piece = os.urandom(48 * 1024)
            body = recording.chunk(index, piece)
            try:
                answer = session.put(f"{server.url}/v1/recordings/{recording.id}/chunks/{index}", data=body,
                                     headers={**recording.phone.auth, "Content-Type": "application/octet-stream",
                                              "Content-Digest": content_digest(body)}, timeout=10)
            except requests.RequestException:
                return  # the server is gone; what was acknowledged must be safe
            if answer.status_code == 201:
                acked[recording.id][index] = answer.json()
                plaintexts[recording.id][index] = piece

    threads = [threading.Thread(target=upload, args=(r,)) for r in recordings]
    for thread in threads:
        thread.start()
    server.wait_for(lambda: sum(len(a) for a in acked.values()) >= 150, timeout=60, interval=0.01)
    server.kill()  # SIGKILL to master and workers, mid-stream
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    total = sum(len(a) for a in acked.values())
    assert total >= 150

    restarted = ServerProcess(server.root, idle_seconds=1)
    restarted.port, restarted.url = server.port, server.url
    restarted.start()
    try:
        headers = staff(restarted)
        for recording in recordings:
            restarted.wait_for(lambda r=recording: r.status(token=headers["Authorization"][7:]).json()["manifest_version"])
            manifest = json.loads(requests.get(f"{restarted.url}/v1/recordings/{recording.id}/manifest",
                                               headers=headers).content)
            held = {c["index"]: c for c in manifest["chunks"]}
            for index, receipt in acked[recording.id].items():
                assert index in held, f"acknowledged chunk {index} of {recording.id} lost"
                assert held[index]["ciphertext_sha256"] == receipt["sha256"]
            # Footage is the held chunks in order; every acknowledged piece is in it byte for byte.
            footage = requests.get(f"{restarted.url}/v1/recordings/{recording.id}/media", headers=headers).content
            offset = 0
            for index in sorted(held):
                size = held[index]["size"]
                if index in plaintexts[recording.id]:
                    assert footage[offset:offset + size] == plaintexts[recording.id][index]
                offset += size
            assert offset == len(footage)
    finally:
        restarted.kill()


@pytest.mark.local_files
def test_startup_reconciles_files_with_records(fresh_server):
    server = fresh_server.start()
    phone = Phone(server)
    recording = phone.create_recording()
    for index in range(3):
        assert recording.put(index, recording.chunk(index)).status_code == 201
    server.stop()

    folder = server.data_dir / "chunks" / recording.id
    lost = next(folder.glob("0000000001-*"))
    lost.unlink()  # a chunk file lost while the server was down
    orphan = folder / ("0000000007-" + "ab" * 32)  # written, never committed
    orphan.write_bytes(b"never acknowledged")
    temporary = folder / ".tmp-0000000008-deadbeef.123"  # a write cut short
    temporary.write_bytes(b"half a chun")
    stranger = server.data_dir / "chunks" / "5f0c3f0e-8c8e-4a53-9d7f-3a0f2b9e1c11"
    stranger.mkdir()
    (stranger / ("0000000000-" + "cd" * 32)).write_bytes(b"no recording at all")
    old = time.time() - 3600
    for path in (orphan, temporary, stranger / ("0000000000-" + "cd" * 32)):
        os.utime(path, (old, old))

    server.start()
    # Recordings are reconciled in id order, so the stranger's folder may be
    # emptied before the lost chunk is noticed: wait for both.
    server.wait_for(lambda: not orphan.exists() and not temporary.exists() and not any(stranger.iterdir())
                    and recording.status().json()["missing"])
    status = recording.status().json()
    assert status["received"] == [[0, 0], [2, 2]] and status["missing"] == [[1, 1]]
    lost_entries = server.query("SELECT detail FROM audit WHERE action = 'chunk.lost' AND recording_id = ?",
                                [recording.id])
    assert len(lost_entries) == 1 and json.loads(lost_entries[0]["detail"])["index"] == 1
    # The phone resumes from status and sends it again.
    assert recording.put(1, recording.chunk(1)).status_code == 201
    assert sorted(p.name[:10] for p in folder.iterdir()) == ["0000000000", "0000000001", "0000000002"]


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MiB file system, so the disk really fills up."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.local_files
def test_full_disk_is_a_clear_507_and_leaves_nothing(small_disk, tmp_path):
    # No watermark on a 3 MiB disk (it refuses new recordings below 1 GiB
    # free by default): this is about the disk really filling up.
    server = ServerProcess(tmp_path / "server", workers=1, WITNESS_DATA_DIR=small_disk / "data",
                           WITNESS_MIN_FREE_BYTES=1)
    server.data_dir = small_disk / "data"
    server.start()
    try:
        recording = Phone(server).create_recording()
        accepted, answer = [], None
        for index in range(40):
            answer = recording.put(index, recording.chunk(index, os.urandom(256 * 1024)))
            if answer.status_code != 201:
                break
            accepted.append(index)
        assert answer.status_code == 507, answer.text
        assert answer.json()["error"] == "insufficient_storage"
        assert accepted, "the disk should have held a few chunks first"
        status = recording.status().json()
        assert status["received"] == [[0, accepted[-1]]]
        names = [p.name for p in (server.data_dir / "chunks" / recording.id).iterdir()]
        assert sorted(int(n[:10]) for n in names) == accepted  # no partial file, no temp file
        # Room again: the same chunk now goes through.
        subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)
        retry = recording.put(index, recording.chunk(index, os.urandom(1024)))
        assert retry.status_code == 201
    finally:
        server.kill()


def test_scheduler_runs_once_across_workers_and_survives_its_leader_dying(tmp_path):
    server = ServerProcess(tmp_path / "server", workers=3, idle_seconds=1).start()
    try:
        phone = Phone(server)
        recordings = [phone.create_recording() for _ in range(5)]
        for recording in recordings:
            recording.put(0, recording.chunk(0))
        token = server.staff_token("sched-observer", "observer")
        for recording in recordings:
            server.wait_for(lambda r=recording: r.status(token=token).json()["manifest_version"] == 1)
        time.sleep(2)  # any second finalizer would have acted by now
        counts = {row["recording_id"]: row["n"] for row in server.query(
            "SELECT recording_id, COUNT(*) AS n FROM audit WHERE action = 'recording.finalized' "
            "GROUP BY recording_id")}
        assert counts == {r.id: 1 for r in recordings}

        (leader,) = map(int, re.findall(r"process (\d+) runs the background jobs", server.log()))
        lock = server.data_dir / "scheduler.lock"
        if server.database_url is None:  # a flock, naming its holder; else a PostgreSQL advisory lock
            assert int(lock.read_text()) == leader
        os.kill(leader, signal.SIGKILL)  # gunicorn replaces the worker; another one takes the lock
        late = phone.create_recording()
        late.put(0, late.chunk(0))
        server.wait_for(lambda: late.status(token=token).json()["manifest_version"] == 1)
        successor = int(re.findall(r"process (\d+) runs the background jobs", server.log())[-1])
        assert successor != leader
        if server.database_url is None:
            assert int(lock.read_text()) == successor
        assert re.findall(r"process (\d+) runs the background jobs", server.log()) == [str(leader), str(successor)]
    finally:
        server.kill()
