"""What an operator sees of a real server: /healthz, /readyz, /metrics with
its token, the disk watermark, and the per-device limits."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ..support import Phone, Recording, ServerProcess, Staff

METRICS_TOKEN = "metrics-" + "s3cret-" * 4
GIB = 1024 ** 3


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def samples(server: ServerProcess, token: str = METRICS_TOKEN) -> dict[tuple, float]:
    """One scrape, as {(name, sorted label pairs): value}."""
    answer = requests.get(server.url + "/metrics", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def readiness_when(server: ServerProcess, status: int) -> dict:
    """Poll /readyz until it answers `status` (it checks at most once a
    second per worker); return the body."""
    def answered():
        answer = requests.get(server.url + "/readyz")
        assert answer.headers["Content-Type"].startswith("application/json")
        return answer.status_code == status and answer.json()

    return server.wait_for(answered)


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def answers(scrape: dict, route: str, status: int, error: str = "") -> float:
    return value(scrape, "witness_device_requests_total", route=route, status=str(status), error=error)


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory):
    """Two workers sharing one multiprocess folder, as the front door runs
    them; recordings stay receiving (a long idle time)."""
    root = tmp_path_factory.mktemp("metrics-server")
    (root / "prometheus").mkdir()
    process = ServerProcess(root, idle_seconds=3600, WITNESS_METRICS_TOKEN=METRICS_TOKEN,
                            PROMETHEUS_MULTIPROC_DIR=root / "prometheus").start()
    yield process
    process.stop()


# -- /healthz and /readyz --------------------------------------------------------

def test_health_and_readiness_answer_anyone_and_say_nothing_more(server):
    alive = requests.get(server.url + "/healthz")
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert alive.headers["Cache-Control"] == "no-store"
    assert readiness_when(server, 200) == {"status": "ready",
                            "checks": {"records": "ok", "chunk_store": "ok", "disk": "ok", "scheduler": "ok"}}
    # No token configured: /metrics does not exist, exactly like any unknown path.
    hidden = requests.get(server.url + "/metrics", headers=bearer(METRICS_TOKEN))
    unknown = requests.get(server.url + "/no-such-path")
    assert (hidden.status_code, hidden.json()["error"]) == (404, "not_found")
    assert hidden.json() == unknown.json()


def test_readiness_names_a_chunk_store_that_cannot_be_written(server):
    chunks, away = server.data_dir / "chunks", server.data_dir / "chunks-unmounted"
    chunks.rename(away)

    def failing():
        if chunks.is_dir():  # a worker still starting up made the folder again
            chunks.rmdir()
        answer = requests.get(server.url + "/readyz")
        return answer.status_code == 503 and answer.json()

    try:
        body = server.wait_for(failing)
    finally:
        away.rename(chunks)
    assert body["error"] == "not_ready" and body["checks"]["chunk_store"] == "failing"
    assert {name for name, state in body["checks"].items() if state == "ok"} == {"records", "disk", "scheduler"}
    assert "chunk store" in body["message"] and str(server.data_dir) not in str(body)
    assert readiness_when(server, 200)["checks"]["chunk_store"] == "ok"


# -- the disk watermark ------------------------------------------------------------

def test_below_the_watermark_new_recordings_get_507_while_started_ones_keep_uploading(tmp_path):
    root = tmp_path / "server"
    roomy = ServerProcess(root).start()
    try:
        phone = Phone(roomy)
        body, key = phone.recording_body()
        assert requests.post(roomy.url + "/v1/recordings", json=body, headers=phone.auth).status_code == 201
        started = Recording(phone, body["recording_id"], key)
        assert started.put(0, started.chunk(0)).status_code == 201
    finally:
        roomy.stop()

    # The same folders, restarted with a watermark above what is free.
    free = shutil.disk_usage(root / "data").free
    low = ServerProcess(root, WITNESS_MIN_FREE_BYTES=free + 1024 * GIB).start()
    try:
        phone.server = low
        new_body, _ = phone.recording_body()
        refused = requests.post(low.url + "/v1/recordings", json=new_body, headers=phone.auth)
        assert (refused.status_code, refused.json()["error"]) == (507, "insufficient_storage")
        assert "already started are still taken" in refused.json()["message"]
        # The recording already started: a retry still answers, its chunks are taken.
        retried = requests.post(low.url + "/v1/recordings", json=body, headers=phone.auth)
        assert retried.status_code == 200
        assert started.put(1, started.chunk(1)).status_code == 201
        assert started.status().json()["received"] == [[0, 1]]
        # Another phone's first recording is refused too; the refused one never existed.
        assert requests.post(low.url + "/v1/recordings", json=new_body, headers=Phone(low).auth).status_code == 507
        ready = readiness_when(low, 503)
        assert ready["checks"]["disk"] == "failing" and "WITNESS_MIN_FREE_BYTES" in ready["message"]
        assert requests.get(low.url + "/healthz").status_code == 200
    finally:
        low.stop()


# -- /metrics -------------------------------------------------------------------

def test_metrics_need_the_configured_token(metrics_server):
    url = metrics_server.url + "/metrics"
    for headers in ({}, bearer("wrong-token-of-the-same-size!!!!!!!"), bearer(METRICS_TOKEN + "x"),
                    bearer(METRICS_TOKEN[:-1]), {"Authorization": f"Basic {METRICS_TOKEN}"},
                    {"Authorization": METRICS_TOKEN}):
        refused = requests.get(url, headers=headers)
        assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized"), headers
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "witness_" not in refused.text
    # "From loopback" proves nothing: this request comes from loopback too, and was refused above.
    assert requests.get(url, headers={"Authorization": f"bearer {METRICS_TOKEN}"}).status_code == 200


def test_acknowledgements_refusals_and_bytes_are_counted_across_workers(metrics_server):
    before = samples(metrics_server)
    phone, stranger = Phone(metrics_server), Phone(metrics_server)
    recording = phone.create_recording()
    bodies = [recording.chunk(i, os.urandom(1000 + i)) for i in range(3)]
    for index, body in enumerate(bodies):
        assert recording.put(index, body).status_code == 201
    assert recording.put(0, bodies[0]).status_code == 200  # the same bytes again
    assert recording.put(3, recording.chunk(3), digest="sha-256=:" + "A" * 43 + "=:").status_code == 400
    foreign = Recording(stranger, recording.id, recording.key)  # not its recording
    assert foreign.put(3, recording.chunk(3)).status_code == 404
    after = samples(metrics_server)

    def delta(route, status, error=""):
        return answers(after, route, status, error) - answers(before, route, status, error)

    assert delta("register_device", 201) == 2 and delta("create_recording", 201) == 1
    assert (delta("put_chunk", 201), delta("put_chunk", 200)) == (3, 1)
    assert delta("put_chunk", 400, "digest_mismatch") == 1 and delta("put_chunk", 404, "not_found") == 1
    acks = value(after, "witness_chunk_ack_seconds_count") - value(before, "witness_chunk_ack_seconds_count")
    assert acks == 4  # acknowledgements only, refusals are not timed
    assert value(after, "witness_chunk_ack_seconds_sum") > value(before, "witness_chunk_ack_seconds_sum")
    assert value(after, "witness_chunk_ack_seconds_bucket", le="+Inf") - \
        value(before, "witness_chunk_ack_seconds_bucket", le="+Inf") == 4
    received = value(after, "witness_chunk_bytes_received_total") - value(before, "witness_chunk_bytes_received_total")
    assert received == sum(len(body) for body in bodies)

    # Every worker is killed (gunicorn starts new ones): the totals are kept,
    # because every process wrote them to the multiprocess folder.
    killed = kill_every_worker(metrics_server)
    assert killed >= 2
    metrics_server.wait_for(lambda: requests.get(metrics_server.url + "/healthz").status_code == 200)
    readiness_when(metrics_server, 200)
    again = samples(metrics_server)
    for route, status in (("put_chunk", 201), ("put_chunk", 200), ("register_device", 201)):
        assert answers(again, route, status) == answers(after, route, status)
    assert value(again, "witness_chunk_bytes_received_total") == value(after, "witness_chunk_bytes_received_total")


def test_gauges_are_read_from_the_records_and_the_disk(metrics_server):
    scrape = samples(metrics_server)
    receiving = value(scrape, "witness_recordings_receiving")
    phone = Phone(metrics_server)
    recordings = [phone.create_recording() for _ in range(2)]
    assert value(samples(metrics_server), "witness_recordings_receiving") == receiving + 2

    # The last chunk marked final: finalized at once, no longer receiving.
    done = recordings[0]
    assert done.put(0, done.chunk(0, final=True), final=True).status_code == 201
    metrics_server.wait_for(lambda: done.status().json()["state"] == "complete")
    scrape = samples(metrics_server)
    assert value(scrape, "witness_recordings_receiving") == receiving + 1
    assert value(scrape, "witness_scheduler_leader_present") == 1
    assert value(scrape, "witness_finalization_lag_seconds") < 3600  # nothing idle for an hour here
    assert value(scrape, "witness_copy_builds_queued") == 0 and value(scrape, "witness_copy_builds_running") == 0
    assert value(scrape, "witness_disk_min_free_bytes") == int(metrics_server.env["WITNESS_MIN_FREE_BYTES"])
    free = shutil.disk_usage(metrics_server.data_dir).free
    assert abs(value(scrape, "witness_disk_free_bytes") - free) < GIB


# -- per-device limits -------------------------------------------------------------

@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    """One worker per pool, so one set of buckets; small bursts that do not
    refill within a test."""
    process = ServerProcess(tmp_path_factory.mktemp("limited-server"), workers=1, idle_seconds=3600,
                            WITNESS_DEVICE_RECORDING_BURST=3, WITNESS_DEVICE_RECORDING_INTERVAL_SECONDS=3600,
                            WITNESS_DEVICE_REQUEST_BURST=40, WITNESS_DEVICE_REQUESTS_PER_SECOND=0.01).start()
    yield process
    process.stop()


def test_a_device_starting_recordings_too_fast_is_slowed_and_its_uploads_go_on(limited_server):
    phone, neighbour = Phone(limited_server), Phone(limited_server)
    made = [phone.create_recording() for _ in range(3)]
    body, _ = phone.recording_body()
    slowed = requests.post(limited_server.url + "/v1/recordings", json=body, headers=phone.auth)
    assert (slowed.status_code, slowed.json()["error"]) == (429, "too_many_requests")
    assert 3000 <= int(slowed.headers["Retry-After"]) <= 3600
    assert "recordings" in slowed.json()["message"]
    # The refused recording does not exist; the others keep uploading.
    observer = Staff(limited_server, "limits-observer", "observer")
    missing = requests.get(f"{limited_server.url}/v1/recordings/{body['recording_id']}", headers=observer.auth)
    assert missing.status_code == 404
    for recording in made:
        assert recording.put(0, recording.chunk(0)).status_code == 201
    # Another phone behind the same address is not held back.
    assert neighbour.create_recording() is not None


def test_a_device_flooding_requests_is_slowed_and_the_refused_chunk_is_not_kept(limited_server):
    phone = Phone(limited_server)
    recording = phone.create_recording()  # request 1 of the burst of 40
    statuses = [recording.put(index, recording.chunk(index)).status_code for index in range(39)]
    assert statuses == [201] * 39
    slowed = recording.put(39, recording.chunk(39))
    assert (slowed.status_code, slowed.json()["error"]) == (429, "too_many_requests")
    assert int(slowed.headers["Retry-After"]) >= 1
    assert recording.status().status_code == 429  # every device request counts
    refreshed = requests.post(limited_server.url + "/v1/auth/refresh", headers=bearer(phone.refresh_token))
    assert (refreshed.status_code, refreshed.json()["error"]) == (429, "too_many_requests")
    observer = Staff(limited_server, "limits-observer-2", "observer")
    held = requests.get(f"{limited_server.url}/v1/recordings/{recording.id}/status", headers=observer.auth)
    assert held.status_code == 200 and held.json()["received"] == [[0, 38]]  # staff are not limited here
    # Another device is not slowed by this one.
    other = Phone(limited_server).create_recording()
    assert other.put(0, other.chunk(0)).status_code == 201


# -- helpers -------------------------------------------------------------------

def kill_every_worker(server: ServerProcess) -> int:
    """SIGKILL every gunicorn worker of the server (never its masters, which
    start new workers); return how many were killed."""
    session = server.process.pid
    masters, workers = set(), set()
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        processes[int(entry.name)] = (command, parent)
    for pid, (command, parent) in processes.items():
        if "gunicorn" in command:
            (workers if "gunicorn" in processes.get(parent, ("", 0))[0] else masters).add(pid)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    return len(workers)
