"""Creating recordings (PROTOCOL.md "Recordings") through a real server."""

from __future__ import annotations

import uuid

import pytest
import requests

from crypto.aead import new_content_key

from ..support import Phone, b64url


def post(server, phone, body):
    return requests.post(server.url + "/v1/recordings", json=body, headers=phone.auth)


def test_create_then_retry_the_same_body(server):
    phone = Phone(server)
    body, _ = phone.recording_body()
    first, retry = post(server, phone, body), post(server, phone, body)
    assert first.status_code == 201
    assert retry.status_code == 200
    assert first.json() == retry.json()
    assert first.json()["state"] == "receiving"
    assert first.json()["recording_id"] == body["recording_id"]
    assert first.json()["max_chunk_bytes"] == 1024 * 1024
    assert first.json()["idle_finalize_seconds"] == 2


def test_same_id_with_a_different_body_is_409(server):
    phone = Phone(server)
    body, _ = phone.recording_body()
    assert post(server, phone, body).status_code == 201
    changed = dict(body, content_type="video/webm")
    answer = post(server, phone, changed)
    assert answer.status_code == 409 and answer.json()["error"] == "recording_conflict"


def test_same_id_from_another_device_is_409(server):
    owner, other = Phone(server), Phone(server)
    body, _ = owner.recording_body()
    assert post(server, owner, body).status_code == 201
    answer = post(server, other, body)
    assert answer.status_code == 409 and answer.json()["error"] == "recording_conflict"


def test_sealed_key_for_another_recording_is_422(server):
    phone = Phone(server)
    body, _ = phone.recording_body()
    other, _ = phone.recording_body()
    body["sealed_key"] = other["sealed_key"]  # sealed with another id in its info
    answer = post(server, phone, body)
    assert answer.status_code == 422 and answer.json()["error"] == "bad_sealed_key"


def test_unknown_key_id_is_422(server):
    phone = Phone(server)
    body, _ = phone.recording_body()
    body["key_id"] = "hpke-0000000000000000"
    answer = post(server, phone, body)
    assert answer.status_code == 422 and answer.json()["error"] == "unknown_key_id"


@pytest.mark.parametrize("field,value,code", [
    ("recording_id", "not-a-uuid", "invalid_recording_id"),
    ("recording_id", str(uuid.uuid4()).upper(), "invalid_recording_id"),
    ("recording_id", None, "invalid_recording_id"),
    ("content_type", "text/html", "invalid_content_type"),
    ("content_type", 5, "invalid_content_type"),
    ("started_at", "2026-11-21 14:03", "invalid_started_at"),
    ("started_at", "2026-11-21T14:03:07", "invalid_started_at"),
    ("sealed_key", "!!!", "invalid_sealed_key"),
    ("sealed_key", b64url(bytes(79)), "invalid_sealed_key"),
    ("key_id", ["x"], "invalid_key_id"),
])
def test_every_field_is_validated(server, field, value, code):
    phone = Phone(server)
    body, _ = phone.recording_body()
    body[field] = value
    answer = post(server, phone, body)
    assert answer.status_code == 400
    assert answer.json()["error"] == code
    assert answer.json()["message"]


def test_non_json_body_is_a_json_400(server):
    phone = Phone(server)
    answer = requests.post(server.url + "/v1/recordings", data="{", headers={**phone.auth,
                                                                           "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_body"


def test_a_refused_recording_leaves_no_row(server):
    phone = Phone(server)
    body, _ = phone.recording_body()
    body["key_id"] = "nope"
    post(server, phone, body)
    body2 = dict(body, key_id=phone.keys["hpke"]["key_id"])
    assert post(server, phone, body2).status_code == 201  # the id was never taken


def test_webm_with_codecs_is_accepted(server):
    phone = Phone(server)
    body, _ = phone.recording_body()
    body["content_type"] = "video/webm;codecs=vp8,opus"
    assert post(server, phone, body).status_code == 201


def test_content_key_never_leaves_in_any_answer(server):
    phone = Phone(server)
    body, key = phone.recording_body(content_key=new_content_key())
    answer = post(server, phone, body)
    assert b64url(key) not in answer.text and key.hex() not in answer.text


@pytest.mark.parametrize("content_type", ["video/mp4\n", 'video/mp4; a="x\ny"', 'video/mp4; a="\u2028€"',
                                          "video/mp4;", "video/" + "a" * 300])
def test_content_types_that_cannot_go_back_out_in_a_header_are_refused(server, content_type):
    phone = Phone(server)
    body, _ = phone.recording_body()
    body["content_type"] = content_type
    answer = post(server, phone, body)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_content_type"
