"""Every answer of PROTOCOL.md's chunk list, through a real gunicorn server.
After every refused chunk, nothing may be left behind: no file, no row."""

from __future__ import annotations

import base64
import os
import hashlib

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto.signing import public_key_pem, sign_chunk

from ..support import Phone, b64url, content_digest


def held_files(server, recording_id):
    return list(server.held_chunks(recording_id))


def held_rows(server, recording_id):
    return [r["idx"] for r in server.query("SELECT idx FROM chunks WHERE recording_id = ? ORDER BY idx", [recording_id])]


def assert_nothing_left(server, recording, expected_indexes):
    assert held_rows(server, recording.id) == expected_indexes
    names = held_files(server, recording.id)
    assert [int(n.split("-")[0]) for n in names] == expected_indexes, names


def test_new_chunk_is_201_with_a_receipt_of_the_body(server):
    recording = Phone(server).create_recording()
    body = recording.chunk(0)
    answer = recording.put(0, body)
    assert answer.status_code == 201
    receipt = answer.json()
    assert receipt["index"] == 0
    assert receipt["size"] == len(body)
    assert receipt["sha256"] == hashlib.sha256(body).hexdigest()
    assert receipt["received_at"].endswith("Z") and len(receipt["received_at"]) == 24
    assert_nothing_left(server, recording, [0])


def test_identical_bytes_again_is_200_with_the_same_receipt(server):
    recording = Phone(server).create_recording()
    body = recording.chunk(0)
    first = recording.put(0, body)
    again = recording.put(0, body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert_nothing_left(server, recording, [0])


def test_different_bytes_for_a_held_index_conflict_keep_the_first_and_are_audited(server):
    recording = Phone(server).create_recording()
    first = recording.chunk(0, b"the real footage")
    assert recording.put(0, first).status_code == 201
    answer = recording.put(0, recording.chunk(0, b"a replacement"))
    assert answer.status_code == 409
    assert answer.json()["error"] == "chunk_conflict"
    assert_nothing_left(server, recording, [0])
    assert list(server.held_chunks(recording.id).values()) == [first]
    actions = [r["action"] for r in server.query("SELECT action FROM audit WHERE recording_id = ?", [recording.id])]
    assert "chunk.conflict" in actions


def test_digest_mismatch_is_400_and_leaves_nothing(server):
    recording = Phone(server).create_recording()
    answer = recording.put(0, recording.chunk(0), digest=content_digest(b"other bytes"))
    assert answer.status_code == 400
    assert answer.json()["error"] == "digest_mismatch"
    assert_nothing_left(server, recording, [])


@pytest.mark.parametrize("digest", ["", "sha-256=abc", "sha-256=:bm90IDMyIGJ5dGVz:", "md5=:AAAA:"])
def test_missing_or_malformed_digest_is_400(server, digest):
    recording = Phone(server).create_recording()
    answer = recording.put(0, recording.chunk(0), digest=digest)
    assert answer.status_code == 400
    assert answer.json()["error"] in ("missing_digest", "invalid_digest")
    assert_nothing_left(server, recording, [])


def test_digest_among_other_algorithms_is_found(server):
    recording = Phone(server).create_recording()
    body = recording.chunk(0)
    sha512 = base64.b64encode(hashlib.sha512(body).digest()).decode()
    answer = recording.put(0, body, digest=f"sha-512=:{sha512}:, {content_digest(body)}")
    assert answer.status_code == 201


@pytest.mark.parametrize("mistake", ["wrong key", "wrong index", "final flag lies", "flipped byte"])
def test_unreadable_chunk_is_422_and_leaves_nothing(server, mistake):
    phone = Phone(server)
    recording = phone.create_recording()
    if mistake == "wrong key":
        body = phone.create_recording().chunk(0)  # another recording's key and id
    elif mistake == "wrong index":
        body = recording.chunk(1)
    elif mistake == "final flag lies":
        body = recording.chunk(0, final=True)
    else:
        good = recording.chunk(0)
        body = good[:5] + bytes([good[5] ^ 1]) + good[6:]
    answer = recording.put(0, body)
    assert answer.status_code == 422
    assert answer.json()["error"] == "chunk_unreadable"
    assert_nothing_left(server, recording, [])


def test_chunk_over_max_chunk_bytes_is_413(server):
    recording = Phone(server).create_recording()
    limit = requests.post(server.url + "/v1/recordings", json=recording.phone.recording_body()[0],
                          headers=recording.phone.auth).json()["max_chunk_bytes"]
    body = recording.chunk(0, bytes(limit))  # plus the 16-byte tag: just over
    answer = recording.put(0, body)
    assert answer.status_code == 413
    assert answer.json()["error"] == "chunk_too_large"
    assert recording.put(0, recording.chunk(0, bytes(limit - 16))).status_code == 201


def test_another_devices_recording_is_404_without_a_hint(server):
    owner = Phone(server).create_recording()
    stranger = Phone(server)
    answer = owner.put(0, owner.chunk(0), token=stranger.token)
    missing = requests.put(f"{server.url}/v1/recordings/00000000-0000-4000-8000-000000000000/chunks/0",
                           data=owner.chunk(0), headers={"Authorization": f"Bearer {stranger.token}",
                                                         "Content-Type": "application/octet-stream",
                                                         "Content-Digest": content_digest(owner.chunk(0))})
    assert answer.status_code == missing.status_code == 404
    assert answer.json() == missing.json()
    assert owner.status(token=stranger.token).status_code == 404
    assert_nothing_left(server, owner, [])


def test_index_after_the_final_chunk_is_409_past_final(server):
    recording = Phone(server).create_recording()
    assert recording.put(2, recording.chunk(2, final=True), final=True).status_code == 201
    answer = recording.put(3, recording.chunk(3))
    assert answer.status_code == 409
    assert answer.json()["error"] == "past_final"
    second_final = recording.put(1, recording.chunk(1, final=True), final=True)
    assert second_final.status_code == 409 and second_final.json()["error"] == "past_final"
    assert_nothing_left(server, recording, [2])
    assert recording.put(1, recording.chunk(1)).status_code == 201


def test_final_below_a_held_index_is_409_past_final(server):
    recording = Phone(server).create_recording()
    assert recording.put(5, recording.chunk(5)).status_code == 201
    answer = recording.put(3, recording.chunk(3, final=True), final=True)
    assert answer.status_code == 409 and answer.json()["error"] == "past_final"
    assert_nothing_left(server, recording, [5])


def test_out_of_order_chunks_and_status_ranges(server):
    recording = Phone(server).create_recording()
    for index in (4, 0, 2, 1, 7):
        assert recording.put(index, recording.chunk(index)).status_code == 201
    status = recording.status().json()
    assert status["state"] == "receiving"
    assert status["received"] == [[0, 2], [4, 4], [7, 7]]
    assert status["missing"] == [[3, 3], [5, 6]]
    assert status["final_index"] is None
    assert recording.put(9, recording.chunk(9, final=True), final=True).status_code == 201
    status = recording.status().json()
    assert status["final_index"] == 9
    assert status["missing"] == [[3, 3], [5, 6], [8, 8]]


@pytest.mark.parametrize("index", ["-1", "01", "1.5", "abc", "99999999999", "%2e%2e"])
def test_malformed_index_is_rejected_as_json(server, index):
    recording = Phone(server).create_recording()
    answer = requests.put(f"{server.url}/v1/recordings/{recording.id}/chunks/{index}", data=b"x",
                          headers={**recording.phone.auth, "Content-Type": "application/octet-stream",
                                   "Content-Digest": content_digest(b"x")})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_index"


def test_wrong_content_type_is_415(server):
    recording = Phone(server).create_recording()
    answer = recording.put(0, recording.chunk(0), headers={"Content-Type": "video/mp4"})
    assert answer.status_code == 415 and answer.json()["error"] == "unsupported_media_type"


def test_bad_captured_at_and_final_headers_are_400(server):
    recording = Phone(server).create_recording()
    bad_time = recording.put(0, recording.chunk(0), headers={"Witness-Captured-At": "yesterday"})
    bad_final = recording.put(0, recording.chunk(0), headers={"Witness-Final": "yes"})
    assert (bad_time.status_code, bad_time.json()["error"]) == (400, "invalid_captured_at")
    assert (bad_final.status_code, bad_final.json()["error"]) == (400, "invalid_final")
    assert_nothing_left(server, recording, [])


def test_signed_chunks_from_a_device_with_a_key(server):
    key = Ed25519PrivateKey.generate()
    phone = Phone(server, public_key_pem=public_key_pem(key.public_key()))
    recording = phone.create_recording()
    body = recording.chunk(0)
    signature = b64url(sign_chunk(key, recording.id, 0, hashlib.sha256(body).hexdigest()))
    unsigned = recording.put(0, body)
    forged = recording.put(0, body, headers={"Witness-Device-Signature": b64url(
        sign_chunk(Ed25519PrivateKey.generate(), recording.id, 0, hashlib.sha256(body).hexdigest()))})
    wrong_index = recording.put(0, body, headers={"Witness-Device-Signature": b64url(
        sign_chunk(key, recording.id, 1, hashlib.sha256(body).hexdigest()))})
    for refused in (unsigned, forged, wrong_index):
        assert refused.status_code == 422 and refused.json()["error"] == "bad_device_signature"
    assert_nothing_left(server, recording, [])
    assert recording.put(0, body, headers={"Witness-Device-Signature": signature}).status_code == 201


def test_signature_from_a_device_without_a_key_is_refused(server):
    recording = Phone(server).create_recording()
    answer = recording.put(0, recording.chunk(0), headers={"Witness-Device-Signature": b64url(bytes(64))})
    assert answer.status_code == 422 and answer.json()["error"] == "bad_device_signature"


def test_device_public_key_must_be_ed25519(server):
    answer = requests.post(server.url + "/v1/devices", json={"public_key_pem": "not a key"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_public_key"


def test_chunked_transfer_encoding_body_is_read_whole(server):
    recording = Phone(server).create_recording()
    body = recording.chunk(0, os.urandom(700 * 1024))

    def pieces():  # no Content-Length: the body arrives in uneven pieces
        for start in range(0, len(body), 65000):
            yield body[start:start + 65000]

    answer = requests.put(f"{server.url}/v1/recordings/{recording.id}/chunks/0", data=pieces(),
                          headers={**recording.phone.auth, "Content-Type": "application/octet-stream",
                                   "Content-Digest": content_digest(body)})
    assert answer.status_code == 201, answer.text
    assert answer.json()["size"] == len(body)


def test_oversized_body_without_content_length_is_413(server):
    recording = Phone(server).create_recording()
    body = recording.chunk(0, bytes(1024 * 1024 + 100))

    def pieces():
        for start in range(0, len(body), 100000):
            yield body[start:start + 100000]

    answer = requests.put(f"{server.url}/v1/recordings/{recording.id}/chunks/0", data=pieces(),
                          headers={**recording.phone.auth, "Content-Type": "application/octet-stream",
                                   "Content-Digest": content_digest(body)})
    assert answer.status_code == 413 and answer.json()["error"] == "chunk_too_large"
    assert_nothing_left(server, recording, [])
