"""Several stateless app nodes on shared backends: two gunicorn servers,
each with a data folder of its own, sharing one keys folder, one PostgreSQL
database and one SeaweedFS bucket. Phones upload through both; the node
running the background jobs is killed with SIGKILL mid-upload (one request
cut half sent, another phone racing the kill); the phones go on through the
other node; every acknowledged chunk is held; exactly one node runs the jobs
and the survivor takes them over; once the killed node is back, manifests
and footage are the same bytes from either node.

Who leads is seen as an operator sees it: the leader's log line ("process N
runs the background jobs", sync/domain/scheduler.py) in one node's log, and
`pg_stat_activity.application_name` naming that process (docs/operations.md,
"Leader")."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import threading
import time
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from ..postgres import shared_cluster
from ..support import (Phone, ServerProcess, Staff, content_digest, decoded_seconds, make_fragmented_mp4,
                       wait_until)

LEADER_LINE = re.compile(r"process (\d+) runs the background jobs")
IDLE_SECONDS = 3
BUCKET = "witness-nodes"


def leader_pids(text: str) -> list[int]:
    return [int(pid) for pid in LEADER_LINE.findall(text)]


def leader_sessions(database_url: str) -> list[str]:
    """What an operator reads in pg_stat_activity: the application_name of
    the session holding the leader lock (sync/leader.py names it)."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT application_name FROM pg_stat_activity "
                            "WHERE datname = current_database() AND application_name LIKE 'witness-sync leader pid %'"
                            ).fetchall()
    return [row[0] for row in rows]


def node_of(pid: int, nodes) -> ServerProcess:
    """The node whose process group `pid` (a gunicorn worker) belongs to."""
    (owner,) = [node for node in nodes if os.getpgid(pid) == node.process.pid]
    return owner


def status(node: ServerProcess, staff: Staff, recording_id: str) -> dict:
    answer = requests.get(f"{node.url}/v1/recordings/{recording_id}/status", headers=staff.auth, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def chunk_headers(phone: Phone, body: bytes, final: bool) -> dict:
    headers = {"Authorization": f"Bearer {phone.token}", "Content-Type": "application/octet-stream",
               "Content-Digest": content_digest(body)}
    if final:
        headers["Witness-Final"] = "?1"
    return headers


class RoundRobinPhone:
    """A phone given both nodes' addresses (as DNS round robin would): each
    chunk goes to the next node in turn; a node that does not answer is
    dropped and the chunk is sent again through the others. Only a 200 or
    201 is an acknowledgement; what it acknowledged is kept in `acked`."""

    def __init__(self, phone: Phone, recording, nodes):
        self.phone, self.recording = phone, recording
        self.nodes = list(nodes)
        self.sessions = {node.url: requests.Session() for node in nodes}
        self.acked: dict[int, dict] = {}  # index -> receipt
        self.plaintexts: dict[int, bytes] = {}
        self.served_by: dict[int, str] = {}  # index -> URL of the node that acknowledged it
        self.created: dict[int, bool] = {}  # index -> whether that answer was 201 (new), not 200 (already held)
        self.dropped: list[str] = []
        self.turn = 0

    def send(self, index: int, plaintext: bytes, *, final: bool = False, timeout: float = 30) -> dict:
        body = self.recording.chunk(index, plaintext, final=final)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.nodes:
                raise AssertionError("no node left to send to")
            node = self.nodes[self.turn % len(self.nodes)]
            self.turn += 1
            try:
                answer = self.sessions[node.url].put(f"{node.url}/v1/recordings/{self.recording.id}/chunks/{index}",
                                                     data=body, headers=chunk_headers(self.phone, body, final),
                                                     timeout=10)
            except requests.RequestException:
                self.drop(node)
                continue
            if answer.status_code in (200, 201):
                self.acked[index], self.plaintexts[index] = answer.json(), plaintext
                self.served_by[index], self.created[index] = node.url, answer.status_code == 201
                return answer.json()
            # Busy (the lock a dying node held not yet let go, a device limit): again shortly.
            assert answer.status_code in (429, 503), f"chunk {index}: {answer.status_code} {answer.text}"
            time.sleep(0.2)
        raise AssertionError(f"chunk {index} not acknowledged within {timeout} s")

    def drop(self, node) -> None:
        if node in self.nodes:
            self.nodes.remove(node)
            self.dropped.append(node.url)


def cut_half_way(node: ServerProcess, phone: Phone, recording, index: int, body: bytes,
                 sent_half: threading.Event, killed: threading.Event) -> str:
    """PUT chunk `index` to `node`, stopping half way through the body until
    `killed` is set, then try to finish: what became of it ("cut", or the
    answer's status if the node, impossibly, answered)."""
    address = urlsplit(node.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        conn.putrequest("PUT", f"/v1/recordings/{recording.id}/chunks/{index}")
        for name, value in {**chunk_headers(phone, body, False), "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(body[:len(body) // 2])
        sent_half.set()
        killed.wait(30)
        try:
            conn.send(body[len(body) // 2:])
            return str(conn.getresponse().status)
        except (OSError, http.client.HTTPException):
            return "cut"
    finally:
        conn.close()


@pytest.fixture
def nodes(tmp_path, seaweedfs):
    """Node A, then node B (A made the keys), each `gunicorn wsgi:app` on
    127.0.0.1 with its own data folder; one keys folder, one database, one
    bucket prefix. Both run with background jobs on (the default), so every
    worker of both competes for the leader lock."""
    database_url = shared_cluster().new_database()
    seaweedfs.bucket(BUCKET)
    shared = {"WITNESS_KEYS_DIR": str(tmp_path / "keys"), "WITNESS_DATABASE_URL": database_url,
              "WITNESS_BACKGROUND_JOBS": "true",
              **seaweedfs.env(f"s3://{BUCKET}/nodes-{uuid.uuid4()}/")}
    started: list[ServerProcess] = []

    def start(root):
        node = ServerProcess(root, front_door=False, idle_seconds=IDLE_SECONDS, **shared)
        started.append(node)
        return node.start()

    try:
        a = start(tmp_path / "node-a")
        b = start(tmp_path / "node-b")
        yield {"a": a, "b": b, "start": start, "database_url": database_url, "prefix": shared["WITNESS_CHUNK_STORE"]}
    finally:
        for node in started:
            node.kill()
            shutil.rmtree(node.run_dir, ignore_errors=True)


def test_two_nodes_one_killed_mid_upload_the_other_goes_on_and_takes_over_the_jobs(nodes, seaweedfs, tmp_path):
    a, b, database_url = nodes["a"], nodes["b"], nodes["database_url"]
    both = (a, b)
    staff = Staff(a, "nodes-observer", "observer")  # one login, used on every node
    wait_until(lambda: leader_pids(a.log() + b.log()), "some worker of some node leads", timeout=20)

    # A recording made through both nodes is finalized by whichever leads.
    warm_up = Phone(a).create_recording()
    for index, node in enumerate((a, b, a)):
        url = f"{node.url}/v1/recordings/{warm_up.id}/chunks/{index}"
        body = warm_up.chunk(index, final=index == 2)
        assert requests.put(url, data=body, headers=chunk_headers(warm_up.phone, body, index == 2)).status_code == 201
    wait_until(lambda: status(b, staff, warm_up.id)["manifest_version"], "the first recording finalized", 20)

    # Exactly one node runs the jobs: one leader line in all, in one node's
    # log, naming a worker of that node, the session PostgreSQL shows as leader.
    time.sleep(1.5)  # a second candidate polls every second: it would have taken a lock that was free
    leaders = {node.url: leader_pids(node.log()) for node in both}
    assert sorted(len(pids) for pids in leaders.values()) == [0, 1], f"leaders by node: {leaders}"
    (leader_pid,) = leader_pids(a.log() + b.log())
    leader = node_of(leader_pid, both)
    survivor = b if leader is a else a
    assert leader_pids(leader.log()) == [leader_pid] and leader_pids(survivor.log()) == []
    assert [name.split()[3] for name in leader_sessions(database_url)] == [str(leader_pid)]
    assert status(b, staff, warm_up.id)["manifest_version"] == 1  # finalized once
    assert f"finalized {warm_up.id} as manifest version 1" in leader.log()
    assert f"finalized {warm_up.id}" not in survivor.log()

    # Two phones upload through both nodes while the leader is killed.
    video = make_fragmented_mp4(tmp_path / "encounter.mp4", 6)
    footage = video.read_bytes()
    size = -(-len(footage) // 40)
    pieces = [footage[i:i + size] for i in range(0, len(footage), size)]
    filming = RoundRobinPhone((phone := Phone(a)), phone.create_recording(), both)
    racing = RoundRobinPhone((other := Phone(b)), other.create_recording(), both)
    cut_at = 12
    sent_half, killed, racing_stop = threading.Event(), threading.Event(), threading.Event()
    cut: dict[str, str] = {}
    errors: list[BaseException] = []

    def film():
        try:
            for index, piece in enumerate(pieces):
                if index == cut_at:  # this one is half sent to the leader when it dies
                    cut["outcome"] = cut_half_way(leader, filming.phone, filming.recording, index,
                                                  filming.recording.chunk(index, piece), sent_half, killed)
                    filming.drop(leader)  # it did not answer: the phone goes on through the other
                filming.send(index, piece, final=index == len(pieces) - 1)
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)
            sent_half.set()

    def race():
        try:
            index = 0
            while not racing_stop.is_set() and index < 400:
                racing.send(index, os.urandom(8 * 1024))
                index += 1
            racing.send(index, os.urandom(1024), final=True)
        except BaseException as exc:
            errors.append(exc)

    kill_log_sizes = {}
    threads = [threading.Thread(target=film), threading.Thread(target=race)]
    for thread in threads:
        thread.start()
    try:
        assert sent_half.wait(60) and not errors, errors
        assert {filming.served_by[i] for i in range(cut_at)} == {a.url, b.url}  # it went through both
        kill_log_sizes = {node.url: len(node.log()) for node in both}
        racing_before = len(racing.acked)
        leader.kill()  # SIGKILL: every process of the node at once
        killed.set()
        # The racing phone goes on too, through the survivor, for a while.
        wait_until(lambda: (racing.dropped and len(racing.acked) >= racing_before + 10) or errors,
             "the racing phone going on through the survivor", timeout=30)
        racing_stop.set()
    finally:
        killed.set()
        racing_stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a phone is still uploading"
    assert not errors, errors
    assert cut["outcome"] == "cut", cut  # never acknowledged by the dead node...
    assert filming.served_by[cut_at] == survivor.url and filming.created[cut_at]  # ...so sent again, and new
    assert filming.dropped == [leader.url] and racing.dropped == [leader.url]
    assert all(filming.served_by[i] == survivor.url for i in range(cut_at, len(pieces)))

    # The survivor takes the jobs over: a worker of it logs that it leads,
    # PostgreSQL names it, /readyz sees a leader, and it finalizes both.
    successor = wait_until(lambda: leader_pids(survivor.log()[kill_log_sizes[survivor.url]:]),
                     "the survivor takes over the background jobs", timeout=20)[0]
    assert node_of(successor, (survivor,)) is survivor
    wait_until(lambda: [n.split()[3] for n in leader_sessions(database_url)] == [str(successor)],
         "PostgreSQL naming the new leader", timeout=10)
    ready = requests.get(survivor.url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"]["scheduler"] == "ok", ready.text
    for uploader in (filming, racing):
        wait_until(lambda u=uploader: status(survivor, staff, u.recording.id)["manifest_version"] == 1,
             f"{uploader.recording.id} finalized by the survivor", timeout=30)
        assert f"finalized {uploader.recording.id} as manifest version 1" in survivor.log()
        assert f"finalized {uploader.recording.id}" not in leader.log()

    # Every acknowledged chunk is held, as acknowledged, by the survivor.
    for uploader in (filming, racing):
        last = max(uploader.acked)
        held_now = status(survivor, staff, uploader.recording.id)
        assert held_now["state"] == "complete" and held_now["received"] == [[0, last]] and held_now["missing"] == []
        manifest = json.loads(requests.get(f"{survivor.url}/v1/recordings/{uploader.recording.id}/manifest",
                                           headers=staff.auth, timeout=10).content)
        held = {chunk["index"]: chunk for chunk in manifest["chunks"]}
        assert sorted(held) == sorted(uploader.acked) == list(range(last + 1))
        for index, receipt in uploader.acked.items():
            assert held[index]["ciphertext_sha256"] == receipt["sha256"]
            assert held[index]["ciphertext_size"] == receipt["size"]
            assert held[index]["sha256"] == hashlib.sha256(uploader.plaintexts[index]).hexdigest()
        media = requests.get(f"{survivor.url}/v1/recordings/{uploader.recording.id}/media",
                             headers=staff.auth, timeout=30).content
        assert media == b"".join(uploader.plaintexts[i] for i in range(last + 1))
    # Stateless nodes: the chunks are in the bucket, none in a data folder.
    bucket_prefix = nodes["prefix"][len(f"s3://{BUCKET}/"):]
    stored = seaweedfs.objects(BUCKET, f"{bucket_prefix}chunks/{filming.recording.id}/")
    assert len(stored) == len(pieces)
    assert not (a.data_dir / "chunks").exists() and not (b.data_dir / "chunks").exists()

    # The killed node comes back on its own folders; it serves, and does not lead.
    restart_log_size = len(leader.log())
    back = nodes["start"](leader.root)
    recordings = [warm_up.id, filming.recording.id, racing.recording.id]
    for recording_id in recordings:
        views = []
        for node in (back, survivor):
            base = f"{node.url}/v1/recordings/{recording_id}"
            got = {part: requests.get(base + suffix, headers=staff.auth, timeout=30)
                   for part, suffix in (("manifest", "/manifest"), ("signature", "/manifest.sig"),
                                        ("media", "/media"), ("detail", ""))}
            assert all(answer.status_code == 200 for answer in got.values()), {
                part: answer.text[:200] for part, answer in got.items()}
            views.append({part: answer.content for part, answer in got.items()})
        assert views[0] == views[1], f"{recording_id} differs between the nodes"
        if recording_id == filming.recording.id:  # the camera's file, byte for byte, and it plays
            assert views[0]["media"] == footage
            (tmp_path / "reassembled.mp4").write_bytes(views[0]["media"])
            assert decoded_seconds(tmp_path / "reassembled.mp4") >= 5.9

    # Still exactly one leader: the survivor's worker; the node back only waits.
    time.sleep(1.5)
    assert leader_pids(leader.log()[restart_log_size:]) == []
    assert leader_pids(survivor.log()) == [successor]
    assert [n.split()[3] for n in leader_sessions(database_url)] == [str(successor)]
    # Each recording was finalized once, by one node.
    counts = {row["recording_id"]: row["n"] for row in survivor.query(
        "SELECT recording_id, COUNT(*) AS n FROM audit WHERE action = 'recording.finalized' GROUP BY recording_id")}
    assert counts == {recording_id: 1 for recording_id in recordings}
