"""Staff finding and watching recordings over HTTP: lists with filters and
cursors, a recording's detail, and footage with the Range requests a
browser's <video> sends while it plays and seeks."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from tests.support import Phone, ServerProcess, Staff, make_fragmented_mp4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Idle finalization after 4 s, so a recording kept alive by a chunk
    every half second stays `receiving` while others go `interrupted`."""
    process = ServerProcess(tmp_path_factory.mktemp("retrieval"), idle_seconds=4).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def observer(server) -> Staff:
    return Staff(server, "ret-observer", "observer")


def listing(server, observer, **params) -> dict:
    answer = requests.get(server.url + "/v1/recordings", headers=observer.auth, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def ids(page: dict) -> list[str]:
    return [item["recording_id"] for item in page["recordings"]]


def wait_finalized(server, observer, recording, state):
    def done():
        status = recording.status(observer.token).json()
        return status["state"] == state and status["manifest_version"]
    server.wait_for(done)


def test_filters_by_state_gaps_device_and_time(server, observer):
    phone, other_phone = Phone(server), Phone(server)
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    complete = phone.create_recording()
    complete.put(0, complete.chunk(0))
    complete.put(1, complete.chunk(1, final=True), final=True)
    gappy = phone.create_recording()
    gappy.put(0, gappy.chunk(0))
    gappy.put(2, gappy.chunk(2))  # chunk 1 never arrives: the phone was knocked away
    wait_finalized(server, observer, complete, "complete")
    wait_finalized(server, observer, gappy, "interrupted")

    live = other_phone.create_recording()
    stop = threading.Event()

    def keep_recording():  # a phone still filming: a chunk every half second
        index = 0
        while not stop.is_set() and index < 120:
            assert live.put(index, live.chunk(index)).status_code == 201
            index += 1
            stop.wait(0.5)

    filming = threading.Thread(target=keep_recording)
    filming.start()
    try:
        server.wait_for(lambda: live.status(observer.token).json()["received"])
        assert set(ids(listing(server, observer, state="receiving"))) == {live.id}
        assert set(ids(listing(server, observer, receiving="true"))) == {live.id}
        assert set(ids(listing(server, observer, receiving="false"))) == {complete.id, gappy.id}
        assert set(ids(listing(server, observer, state="complete,interrupted"))) == {complete.id, gappy.id}
        assert ids(listing(server, observer, has_gaps="true")) == [gappy.id]
        assert set(ids(listing(server, observer, has_gaps="false"))) == {complete.id, live.id}
        assert set(ids(listing(server, observer, device_id=phone.device_id))) == {complete.id, gappy.id}
        assert ids(listing(server, observer, device_id=other_phone.device_id)) == [live.id]
        # Time: the span in which a recording was being received.
        now = datetime.now(timezone.utc)
        assert ids(listing(server, observer, to=before.isoformat())) == []
        assert set(ids(listing(server, observer, **{"from": before.isoformat()}))) == {complete.id, gappy.id, live.id}
        assert ids(listing(server, observer, **{"from": (now + timedelta(minutes=1)).isoformat()})) == []
    finally:
        stop.set()
        filming.join()

    summary = next(item for item in listing(server, observer)["recordings"] if item["recording_id"] == gappy.id)
    assert summary == {**summary, "state": "interrupted", "chunks_held": 2, "missing_chunks": 1, "has_gaps": True,
                       "device_id": phone.device_id, "content_type": "video/mp4", "manifest_version": 1,
                       "footage_size": 2 * len(b"piece 0 " * 50)}
    done = next(item for item in listing(server, observer)["recordings"] if item["recording_id"] == complete.id)
    assert (done["state"], done["final_index"], done["missing_chunks"], done["has_gaps"]) == ("complete", 1, 0, False)


def test_cursor_pages_through_newest_first_without_repeats(server, observer):
    phone = Phone(server)
    made = [phone.create_recording().id for _ in range(5)]
    pages, cursor = [], None
    while True:
        params = {"device_id": phone.device_id, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = listing(server, observer, **params)
        pages.append(ids(page))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [rid for page in pages for rid in page] == list(reversed(made))
    # A recording arriving while paging does not shift later pages.
    first = listing(server, observer, device_id=phone.device_id, limit=2)
    phone.create_recording()
    second = listing(server, observer, device_id=phone.device_id, limit=2, cursor=first["next_cursor"])
    assert ids(second) == pages[1]


@pytest.mark.parametrize("params,code", [
    ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ({"cursor": "WyJhdWRpdC1ERVNDIiwxMF0"}, "invalid_cursor"),  # another list's cursor
    ({"limit": "0"}, "invalid_limit"),
    ({"limit": "201"}, "invalid_limit"),
    ({"state": "deleted"}, "invalid_state"),
    ({"has_gaps": "maybe"}, "invalid_has_gaps"),
    ({"receiving": "yes please"}, "invalid_receiving"),
    ({"from": "yesterday"}, "invalid_from"),
    ({"device_id": "../../etc"}, "invalid_device_id"),
])
def test_bad_list_parameters_are_clear_errors(server, observer, params, code):
    answer = requests.get(server.url + "/v1/recordings", headers=observer.auth, params=params)
    assert answer.status_code == 400 and answer.json()["error"] == code, answer.text


def test_detail_shows_chunks_times_gaps_and_manifest_versions(server, observer):
    phone = Phone(server)
    recording = phone.create_recording()
    captured = "2026-11-21T14:03:08.000Z"
    recording.put(0, recording.chunk(0, b"a" * 100), headers={"Witness-Captured-At": captured})
    recording.put(2, recording.chunk(2, b"c" * 300))
    wait_finalized(server, observer, recording, "interrupted")
    recording.put(1, recording.chunk(1, b"b" * 200))  # a late chunk: a second manifest version
    server.wait_for(lambda: recording.status(observer.token).json()["manifest_version"] == 2)

    answer = requests.get(f"{server.url}/v1/recordings/{recording.id}", headers=observer.auth)
    assert answer.status_code == 200, answer.text
    detail = answer.json()
    assert [(c["index"], c["size"], c["ciphertext_size"]) for c in detail["chunks"]] == \
        [(0, 100, 116), (1, 200, 216), (2, 300, 316)]
    assert detail["chunks"][0]["captured_at"] == captured and detail["chunks"][1]["captured_at"] is None
    assert all(c["received_at"].endswith("Z") and len(c["sha256"]) == 64 for c in detail["chunks"])
    assert detail["chunks"][1]["received_at"] > detail["chunks"][2]["received_at"]
    assert (detail["received"], detail["missing"], detail["has_gaps"]) == ([[0, 2]], [], False)
    assert [(m["version"], m["state"]) for m in detail["manifests"]] == [(1, "interrupted"), (2, "interrupted")]
    manifest = requests.get(f"{server.url}/v1/recordings/{recording.id}/manifest?version=1", headers=observer.auth)
    assert manifest.json()["gaps"] == [[1, 1]]
    assert detail["manifests"][0]["sha256"] == manifest.headers["ETag"].strip('"')


@pytest.fixture(scope="module")
def video_recording(server, observer, tmp_path_factory):
    """A real fragmented MP4, uploaded in 64 KiB pieces, finalized."""
    video = make_fragmented_mp4(tmp_path_factory.mktemp("video") / "seek.mp4", 6).read_bytes()
    phone = Phone(server)
    recording = phone.create_recording()
    pieces = [video[i:i + 65536] for i in range(0, len(video), 65536)]
    for index, piece in enumerate(pieces):
        final = index == len(pieces) - 1
        assert recording.put(index, recording.chunk(index, piece, final=final), final=final).status_code == 201
    wait_finalized(server, observer, recording, "complete")
    return recording, video


def test_a_browser_plays_and_seeks_with_range_requests(server, observer, video_recording):
    recording, video = video_recording
    url = f"{server.url}/v1/recordings/{recording.id}/media"
    total = len(video)

    # 1. <video src> starts with an open range and reads only what it needs.
    with requests.get(url, headers={**observer.auth, "Range": "bytes=0-"}, stream=True) as first:
        assert first.status_code == 206
        assert first.headers["Content-Type"] == "video/mp4"
        assert first.headers["Accept-Ranges"] == "bytes"
        assert first.headers["Content-Range"] == f"bytes 0-{total - 1}/{total}"
        assert int(first.headers["Content-Length"]) == total
        etag = first.headers["ETag"]
        assert first.raw.read(32768) == video[:32768]  # then the player moves on: connection dropped
    # 2. A seek into the middle: another open range from there, abandoned too.
    middle = total // 2 + 12345
    with requests.get(url, headers={**observer.auth, "Range": f"bytes={middle}-", "If-Range": etag},
                      stream=True) as seek:
        assert seek.status_code == 206
        assert seek.headers["Content-Range"] == f"bytes {middle}-{total - 1}/{total}"
        assert seek.raw.read(10000) == video[middle:middle + 10000]
    # 3. Bounded ranges across chunk boundaries, and the tail by suffix.
    for start, end in ((65530, 65545), (0, 0), (total - 1, total - 1), (100, 3 * 65536 + 7)):
        part = requests.get(url, headers={**observer.auth, "Range": f"bytes={start}-{end}"})
        assert part.status_code == 206 and part.content == video[start:end + 1], (start, end)
        assert part.headers["Content-Range"] == f"bytes {start}-{end}/{total}"
    tail = requests.get(url, headers={**observer.auth, "Range": "bytes=-1000"})
    assert tail.status_code == 206 and tail.content == video[-1000:]
    beyond = requests.get(url, headers={**observer.auth, "Range": f"bytes={total - 10}-{total + 5000}"})
    assert beyond.status_code == 206 and beyond.content == video[-10:]
    # 4. Past the end: 416 with the size, as JSON.
    unsatisfiable = requests.get(url, headers={**observer.auth, "Range": f"bytes={total}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{total}"
    assert unsatisfiable.json()["error"] == "range_not_satisfiable"
    # 5. A stale If-Range or several ranges at once: the whole footage.
    stale = requests.get(url, headers={**observer.auth, "Range": "bytes=10-20", "If-Range": '"0-0"'})
    assert stale.status_code == 200 and stale.content == video
    several = requests.get(url, headers={**observer.auth, "Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == video
    # 6. Plain GET: all of it, byte for byte.
    whole = requests.get(url, headers=observer.auth)
    assert whole.status_code == 200 and whole.content == video and whole.headers["ETag"] == etag


def test_footage_still_arriving_is_served_as_far_as_it_is_held(server, observer):
    phone = Phone(server)
    recording = phone.create_recording()
    pieces = [bytes([65 + i]) * 1000 for i in range(4)]
    for index in range(3):
        recording.put(index, recording.chunk(index, pieces[index]))
    url = f"{server.url}/v1/recordings/{recording.id}/media"
    so_far = requests.get(url, headers=observer.auth)
    assert so_far.status_code == 200 and so_far.content == b"".join(pieces[:3])
    recording.put(3, recording.chunk(3, pieces[3]))
    later = requests.get(url, headers=observer.auth)
    assert later.content == b"".join(pieces) and later.headers["ETag"] != so_far.headers["ETag"]
    # A player holding the old ETag asks for the new bytes with If-Range: the
    # footage changed, so it gets all of it, not a range of something else.
    resumed = requests.get(url, headers={**observer.auth, "Range": "bytes=3000-", "If-Range": so_far.headers["ETag"]})
    assert resumed.status_code == 200 and resumed.content == b"".join(pieces)


def test_every_look_at_footage_is_in_the_audit_log(server, observer, video_recording):
    recording, video = video_recording
    custodian = Staff(server, "ret-custodian", "custodian")
    since = datetime.now(timezone.utc).isoformat()
    time.sleep(0.01)
    requests.get(f"{server.url}/v1/recordings/{recording.id}", headers=observer.auth)
    requests.get(f"{server.url}/v1/recordings/{recording.id}/media", headers={**observer.auth, "Range": "bytes=5-9"})
    requests.get(f"{server.url}/v1/recordings/{recording.id}/manifest.sig", headers=observer.auth)
    entries = requests.get(server.url + "/v1/audit", headers=custodian.auth,
                           params={"recording_id": recording.id, "from": since, "order": "asc"}).json()["entries"]
    looks = [(e["actor"], e["action"], e["detail"]) for e in entries]
    assert looks == [
        ("staff:ret-observer", "recording.viewed", {}),
        ("staff:ret-observer", "footage.streamed",
         {"first_byte": 5, "last_byte": 9, "footage_size": len(video), "partial": True}),
        ("staff:ret-observer", "manifest.downloaded",
         {"version": 1, "part": "signature", "manifest_sha256": looks[2][2]["manifest_sha256"]}),
    ]
