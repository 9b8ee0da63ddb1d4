"""Finalization through a real server and its real scheduler: manifests,
their chain, and signatures checked with the openssl command line."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
import requests

from ..support import Phone


@pytest.fixture(scope="module")
def observer(server):
    return {"Authorization": f"Bearer {server.staff_token('fin-observer', 'observer')}"}


def wait_for_state(server, recording, observer, state, version):
    def reached():
        status = recording.status(token=observer["Authorization"][7:]).json()
        return status if (status["state"], status["manifest_version"]) == (state, version) else None
    return server.wait_for(reached, timeout=30)


def get_manifest(server, recording, observer, version=None):
    query = f"?version={version}" if version else ""
    base = f"{server.url}/v1/recordings/{recording.id}"
    body = requests.get(base + "/manifest" + query, headers=observer)
    sig = requests.get(base + "/manifest.sig" + query, headers=observer)
    assert body.status_code == sig.status_code == 200
    return body.content, sig.content


def openssl_verifies(tmp_path, server, manifest: bytes, signature: bytes) -> bool:
    pem = requests.get(server.url + "/v1/keys").json()["signing"]["public_key_pem"]
    (tmp_path / "signing.pub.pem").write_text(pem)
    (tmp_path / "manifest.json").write_bytes(manifest)
    (tmp_path / "manifest.sig").write_bytes(signature)
    result = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "signing.pub.pem", "-rawin",
                             "-in", "manifest.json", "-sigfile", "manifest.sig"],
                            cwd=tmp_path, capture_output=True, text=True)
    return result.returncode == 0 and "Signature Verified Successfully" in result.stdout


def rfc6962_root(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


def test_complete_recording_gets_a_signed_manifest_that_openssl_verifies(server, observer, tmp_path):
    phone = Phone(server)
    recording = phone.create_recording()
    pieces = [f"second {i} of footage ".encode() * (100 + i) for i in range(5)]
    for index in (3, 1, 0, 4, 2):  # any order
        final = index == 4
        assert recording.put(index, recording.chunk(index, pieces[index], final=final), final=final).status_code == 201
    complete = requests.post(f"{server.url}/v1/recordings/{recording.id}/complete", headers=phone.auth)
    assert complete.status_code == 202
    wait_for_state(server, recording, observer, "complete", 1)

    manifest_bytes, signature = get_manifest(server, recording, observer)
    assert openssl_verifies(tmp_path, server, manifest_bytes, signature)
    tampered = manifest_bytes.replace(b'"complete"', b'"interrupted"')
    assert not openssl_verifies(tmp_path, server, tampered, signature)

    manifest = json.loads(manifest_bytes)
    assert manifest_bytes == json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False).encode()
    assert manifest["format"] == "witness-manifest/1"
    assert (manifest["version"], manifest["previous_manifest_sha256"]) == (1, None)
    assert (manifest["recording_id"], manifest["device_id"]) == (recording.id, phone.device_id)
    assert manifest["state"] == "complete" and manifest["gaps"] == []
    assert manifest["started_at"] == "2026-11-21T14:03:07.123Z"
    assert [c["index"] for c in manifest["chunks"]] == [0, 1, 2, 3, 4]
    assert [c["sha256"] for c in manifest["chunks"]] == [hashlib.sha256(p).hexdigest() for p in pieces]
    assert [c["size"] for c in manifest["chunks"]] == [len(p) for p in pieces]
    footage = b"".join(pieces)
    assert manifest["footage"] == {"size": len(footage), "sha256": hashlib.sha256(footage).hexdigest()}
    leaves = [hashlib.sha256(p).digest() for p in pieces]
    assert manifest["merkle_root"] == rfc6962_root(leaves).hex()
    media = requests.get(f"{server.url}/v1/recordings/{recording.id}/media", headers=observer)
    assert media.status_code == 200 and media.content == footage
    assert media.headers["Content-Type"] == "video/mp4"


def test_idle_recording_is_interrupted_with_its_gaps_then_a_late_chunk_makes_version_2(server, observer, tmp_path):
    phone = Phone(server)
    recording = phone.create_recording()
    for index in (0, 1, 3, 6):
        assert recording.put(index, recording.chunk(index)).status_code == 201
    first = wait_for_state(server, recording, observer, "interrupted", 1)
    assert first["missing"] == [[2, 2], [4, 5]]
    v1_bytes, v1_sig = get_manifest(server, recording, observer)
    v1 = json.loads(v1_bytes)
    assert v1["state"] == "interrupted" and v1["gaps"] == [[2, 2], [4, 5]]

    # The phone comes back online and uploads its backlog, then stops normally.
    for index in (2, 4, 5):
        assert recording.put(index, recording.chunk(index)).status_code == 201
    assert recording.status().json()["state"] == "receiving"
    assert recording.put(7, recording.chunk(7, final=True), final=True).status_code == 201
    wait_for_state(server, recording, observer, "complete", 2)

    v2_bytes, v2_sig = get_manifest(server, recording, observer)
    v2 = json.loads(v2_bytes)
    assert v2["version"] == 2 and v2["state"] == "complete" and v2["gaps"] == []
    assert v2["previous_manifest_sha256"] == hashlib.sha256(v1_bytes).hexdigest()
    assert openssl_verifies(tmp_path, server, v2_bytes, v2_sig)
    # Earlier versions are kept, byte for byte.
    assert get_manifest(server, recording, observer, version=1) == (v1_bytes, v1_sig)


def test_recording_with_no_chunks_is_interrupted_with_empty_footage(server, observer):
    recording = Phone(server).create_recording()
    wait_for_state(server, recording, observer, "interrupted", 1)
    manifest = json.loads(get_manifest(server, recording, observer)[0])
    assert manifest["chunks"] == [] and manifest["footage"]["size"] == 0
    assert manifest["merkle_root"] == hashlib.sha256(b"").hexdigest()


def test_manifest_before_finalization_and_unknown_versions(server, observer):
    phone = Phone(server)
    recording = phone.create_recording()
    recording.put(0, recording.chunk(0))
    base = f"{server.url}/v1/recordings/{recording.id}"
    early = requests.get(base + "/manifest", headers=observer)
    assert early.status_code == 404 and early.json()["error"] == "not_ready"
    wait_for_state(server, recording, observer, "interrupted", 1)
    assert requests.get(base + "/manifest?version=9", headers=observer).status_code == 404
    bad = requests.get(base + "/manifest?version=x", headers=observer)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_version"


def test_media_honours_ranges(server, observer):
    phone = Phone(server)
    recording = phone.create_recording()
    pieces = [bytes([i]) * 1000 for i in range(4)]
    for index, piece in enumerate(pieces):
        recording.put(index, recording.chunk(index, piece))
    footage = b"".join(pieces)
    url = f"{server.url}/v1/recordings/{recording.id}/media"
    part = requests.get(url, headers={**observer, "Range": "bytes=990-2010"})
    assert part.status_code == 206
    assert part.content == footage[990:2011]
    assert part.headers["Content-Range"] == f"bytes 990-2010/{len(footage)}"
    suffix = requests.get(url, headers={**observer, "Range": "bytes=-10"})
    assert suffix.status_code == 206 and suffix.content == footage[-10:]
    beyond = requests.get(url, headers={**observer, "Range": "bytes=5000-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(footage)}"
    assert requests.get(url, headers=observer).headers["Accept-Ranges"] == "bytes"


def test_ranges_match_the_footage_byte_for_byte_while_a_gap_fills(server, observer):
    # Chunks of different sizes arrive out of order; chunk 2 comes last, so
    # every byte after it moves when it does. Each range read is checked
    # against the footage as held at that moment, across chunk boundaries.
    recording = Phone(server).create_recording()
    pieces = [bytes([65 + i]) * size + bytes(range(i + 1)) for i, size in enumerate((700, 1300, 90, 2500, 1, 640))]
    url = f"{server.url}/v1/recordings/{recording.id}/media"

    def check_every_range(held: list[int]) -> str:
        footage = b"".join(pieces[i] for i in held)
        whole = requests.get(url, headers=observer)
        assert whole.status_code == 200 and whole.content == footage
        edges = sorted({0, len(footage) - 1, *(sum(len(pieces[i]) for i in held[:n]) for n in range(len(held)))})
        for start in edges:
            for end in (start, start + 1, start + 699, len(footage) - 1):
                end = min(end, len(footage) - 1)
                part = requests.get(url, headers={**observer, "Range": f"bytes={start}-{end}"})
                assert part.status_code == 206, (start, end)
                assert part.content == footage[start:end + 1], (start, end)
                assert part.headers["Content-Range"] == f"bytes {start}-{end}/{len(footage)}"
        return whole.headers["ETag"]

    for index in (0, 1, 3, 4, 5):
        assert recording.put(index, recording.chunk(index, pieces[index])).status_code == 201
    before = check_every_range([0, 1, 3, 4, 5])
    assert recording.put(2, recording.chunk(2, pieces[2])).status_code == 201
    after = check_every_range([0, 1, 2, 3, 4, 5])
    assert before != after
    # A range asked for the footage as it was (If-Range names the old ETag) gets the whole new footage.
    stale = requests.get(url, headers={**observer, "Range": "bytes=0-9", "If-Range": before})
    assert stale.status_code == 200 and stale.content == b"".join(pieces)


def test_damaged_chunk_on_disk_is_a_json_error_not_wrong_footage(server, observer):
    recording = Phone(server).create_recording()
    recording.put(0, recording.chunk(0, b"original footage"))
    ((name, stored),) = server.held_chunks(recording.id).items()
    data = bytearray(stored)
    data[3] ^= 0xFF
    server.overwrite_held_chunk(recording.id, name, bytes(data))
    answer = requests.get(f"{server.url}/v1/recordings/{recording.id}/media", headers=observer)
    assert answer.status_code == 500
    assert answer.json()["error"] == "footage_damaged"
    # The damaged bytes are quarantined, not served and not signed; the phone
    # sees the chunk missing and sends it again.
    assert recording.status().json()["received"] == []
    assert list(server.held_chunks(recording.id, area="quarantine").values()) == [bytes(data)]
    assert recording.put(0, recording.chunk(0, b"original footage")).status_code == 201
    assert requests.get(f"{server.url}/v1/recordings/{recording.id}/media", headers=observer).content \
        == b"original footage"
