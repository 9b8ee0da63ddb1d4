"""Real footage: an ffmpeg-made fragmented MP4 recorded live by the
`witness-record` console script, knocked away or stopped normally, then
reassembled by the server and decoded by ffprobe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support import decoded_seconds, make_fragmented_mp4

def witness_record(*args: str, timeout: float) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("witness-record")
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def observer(server):
    return {"Authorization": f"Bearer {server.staff_token('footage-observer', 'observer')}"}


def test_knocked_away_phone_leaves_decodable_footage(server, observer, tmp_path):
    video = make_fragmented_mp4(tmp_path / "encounter.mp4", 20)
    run = witness_record(str(video), "--server", server.url, "--stop-after", "12",
                         "--outbox", str(tmp_path / "phone"), timeout=60)
    assert run.returncode == 0, run.stderr
    assert "knocked away" in run.stderr
    recording_id = run.stdout.strip()

    def interrupted():
        status = requests.get(f"{server.url}/v1/recordings/{recording_id}/status", headers=observer).json()
        return status if status["state"] == "interrupted" and status["manifest_version"] else None

    status = server.wait_for(interrupted, timeout=30)
    assert status["final_index"] is None
    (held,) = status["received"]
    assert held[0] == 0 and held[1] >= 10  # about twelve one-second chunks made it

    footage = requests.get(f"{server.url}/v1/recordings/{recording_id}/media", headers=observer).content
    manifest = requests.get(f"{server.url}/v1/recordings/{recording_id}/manifest", headers=observer).json()
    sizes = [chunk["size"] for chunk in manifest["chunks"]]
    assert len(sizes) == held[1] + 1 and len(set(sizes)) == 1  # equal one-second pieces
    assert len(footage) == sum(sizes) == manifest["footage"]["size"]
    assert footage == video.read_bytes()[:len(footage)]  # the first chunks, byte for byte
    (tmp_path / "reassembled.mp4").write_bytes(footage)
    assert decoded_seconds(tmp_path / "reassembled.mp4") >= 10


def test_normal_stop_completes_with_the_whole_file(server, observer, tmp_path):
    video = make_fragmented_mp4(tmp_path / "short.mp4", 3)
    run = witness_record(str(video), "--server", server.url, "--chunk-seconds", "0.5", "--sign",
                         "--outbox", str(tmp_path / "phone"), timeout=60)
    assert run.returncode == 0, run.stderr
    recording_id = run.stdout.strip()

    def complete():
        status = requests.get(f"{server.url}/v1/recordings/{recording_id}/status", headers=observer).json()
        return status if status["state"] == "complete" else None

    status = server.wait_for(complete, timeout=30)
    assert status["missing"] == [] and status["final_index"] >= 5  # 3 s in half-second chunks
    assert status["received"] == [[0, status["final_index"]]]
    footage = requests.get(f"{server.url}/v1/recordings/{recording_id}/media", headers=observer).content
    assert footage == video.read_bytes()
    manifest = requests.get(f"{server.url}/v1/recordings/{recording_id}/manifest", headers=observer).json()
    assert all(chunk["device_signature"] for chunk in manifest["chunks"])
    # Nothing is left waiting in the phone's outbox.
    assert not list((tmp_path / "phone" / "recordings" / recording_id).glob("*.chunk"))
