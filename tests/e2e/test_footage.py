"""Real footage: an ffmpeg-made fragmented MP4 recorded live by the
`witness-record` console script, knocked away or stopped normally, then
reassembled by the server and decoded by ffprobe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

FPS = 25


def make_fragmented_mp4(path: Path, seconds: int) -> Path:
    """Test pattern and tone, H.264 with a keyframe every second, fragmented
    so that any prefix cut at a fragment boundary decodes (FIELD-NOTES.md)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0",
         "-c:a", "aac", "-movflags", "frag_keyframe+empty_moov+default_base_moof", str(path)],
        check=True,
    )
    return path


def decoded_seconds(path: Path) -> float:
    """Seconds of video that actually decode: frames counted, not the exit
    code (ffprobe exits 0 on a truncated file)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
                          "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    return int(out) / FPS


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
