"""The reference device client: offline recording into the outbox, then
delivery after the app restarts and the server comes back."""

from __future__ import annotations

import json
import time

import pytest
import requests

from sync.client.device import Backoff, DeviceClient, NotYetLogged, ServerUnreachable, UploadRefused

from ..support import ServerProcess


def test_pieces_recorded_offline_arrive_after_a_restart(fresh_server, tmp_path):
    server = fresh_server.start()
    outbox = tmp_path / "phone"
    phone = DeviceClient(server.url, outbox, backoff=Backoff(base=0.05, cap=0.2), timeout=2)
    phone.register()
    phone.server_keys()
    server.stop()  # the network goes away

    recording_id = phone.start_recording("video/mp4")
    pieces = [f"second {i}".encode() * 500 for i in range(6)]
    for i, piece in enumerate(pieces):
        phone.add_piece(recording_id, piece, final=i == len(pieces) - 1)
    with pytest.raises(ServerUnreachable):
        phone.upload_pending(recording_id, deadline=time.monotonic() + 1)
    assert phone.pending_indexes(recording_id) == list(range(6))

    server.start()  # hours later, the app restarts with the same outbox
    again = DeviceClient(server.url, outbox, backoff=Backoff(base=0.05, cap=0.2))
    assert again.recordings() == [recording_id]
    assert again.upload_pending(recording_id, deadline=time.monotonic() + 30) == 6
    assert again.pending_indexes(recording_id) == []

    token = server.staff_token("client-observer", "observer")
    headers = {"Authorization": f"Bearer {token}"}
    server.wait_for(lambda: requests.get(f"{server.url}/v1/recordings/{recording_id}/status",
                                         headers=headers).json()["state"] == "complete")
    media = requests.get(f"{server.url}/v1/recordings/{recording_id}/media", headers=headers)
    assert media.content == b"".join(pieces)


def test_resume_skips_what_the_server_already_holds(fresh_server, tmp_path):
    server = fresh_server.start()
    phone = DeviceClient(server.url, tmp_path / "phone")
    phone.register()
    recording_id = phone.start_recording("video/mp4")
    for _ in range(3):
        phone.add_piece(recording_id, b"x" * 100)
    assert phone.upload_pending(recording_id) == 3
    # The ack of chunk 3 was lost: the server has it, the phone does not know.
    phone.add_piece(recording_id, b"y" * 100, final=True)
    phone._upload_chunk(recording_id, 3, None)
    restored = tmp_path / "phone" / "recordings" / recording_id
    (restored / "0000000003.chunk").write_bytes(b"stale copy that must not be sent")
    (restored / "0000000003.meta").write_text('{"final": true, "captured_at": "2026-11-21T14:03:07.123Z"}')
    status = phone.resume(recording_id)
    assert status["received"] == [[0, 3]]
    assert phone.pending_indexes(recording_id) == []


def test_a_permanent_refusal_parks_the_chunk_instead_of_retrying(fresh_server, tmp_path):
    server = fresh_server.start()
    phone = DeviceClient(server.url, tmp_path / "phone")
    phone.register()
    recording_id = phone.start_recording("video/mp4")
    phone.add_piece(recording_id, b"z" * 100)
    folder = tmp_path / "phone" / "recordings" / recording_id
    (folder / "0000000000.chunk").write_bytes(b"corrupted on the phone's flash")
    with pytest.raises(UploadRefused) as refused:
        phone.upload_pending(recording_id, deadline=time.monotonic() + 10)
    assert refused.value.error == "chunk_unreadable"
    assert (folder / "rejected" / "0000000000.reason").read_text().startswith("422 chunk_unreadable")
    assert phone.pending_indexes(recording_id) == []


def test_a_registration_that_expired_unused_is_replaced_and_the_recording_still_arrives(tmp_path):
    # Devices unused for 2 seconds expire here (a day by default); the
    # leader expires them when it starts.
    server = ServerProcess(tmp_path / "server", WITNESS_UNUSED_DEVICE_EXPIRY_HOURS=2 / 3600).start()
    try:
        phone = DeviceClient(server.url, tmp_path / "phone", backoff=Backoff(base=0.05, cap=0.2), timeout=5)
        old_id = phone.register(sign_chunks=True)
        old_refresh = phone.device()["refresh_token"]
        recording_id = phone.start_recording("video/mp4")
        for i in range(3):  # recorded, and signed, before anything was sent
            phone.add_piece(recording_id, f"piece {i}".encode() * 100, final=i == 2)
        time.sleep(2.5)
        server.stop()
        server.start()
        server.wait_for(lambda: requests.post(server.url + "/v1/auth/refresh",
                                              headers={"Authorization": f"Bearer {old_refresh}"}).status_code == 401)

        assert phone.upload_pending(recording_id, deadline=time.monotonic() + 30) == 3
        assert phone.device()["device_id"] != old_id
        observer = server.staff_token("expiry-observer", "observer")
        detail = requests.get(f"{server.url}/v1/recordings/{recording_id}",
                              headers={"Authorization": f"Bearer {observer}"}).json()
        assert detail["device_id"] == phone.device()["device_id"]
        assert [chunk["device_signed"] for chunk in detail["chunks"]] == [True] * 3  # the same key still signs
    finally:
        server.stop()


def test_the_phone_keeps_signed_receipts_and_finds_each_in_the_log(tmp_path):
    server = ServerProcess(tmp_path / "server", WITNESS_LOG_CHECKPOINT_SECONDS=0.5).start()
    try:
        phone = DeviceClient(server.url, tmp_path / "phone")
        phone.register()
        recording_id = phone.start_recording("video/mp4")
        for i in range(4):
            phone.add_piece(recording_id, f"piece {i}".encode() * 100, final=i == 3)
        assert phone.upload_pending(recording_id) == 4
        kept = phone.receipts(recording_id)
        assert [r["index"] for r in kept] == [0, 1, 2, 3] and all(r["recording_id"] == recording_id for r in kept)
        assert not (tmp_path / "phone" / "receipts" / f"{recording_id}.not-verified.jsonl").exists()

        def checked():
            try:
                return phone.check_receipts(recording_id)
            except NotYetLogged:
                return 0
        server.wait_for(lambda: checked() == 4)  # once a checkpoint covers the last one
        # A receipt whose leaf the log does not hold at that index is named.
        forged = {**kept[1], "leaf_index": kept[2]["leaf_index"]}
        lines = phone.receipts_file(recording_id).read_text().splitlines()
        lines[1] = json.dumps(forged, sort_keys=True)
        phone.receipts_file(recording_id).write_text("\n".join(lines) + "\n")
        with pytest.raises(UploadRefused, match="receipt_not_in_log"):
            phone.check_receipts(recording_id)
    finally:
        server.stop()
