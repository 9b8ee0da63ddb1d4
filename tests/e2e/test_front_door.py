"""The front door as `scripts/serve` starts it (nginx in front of two
gunicorn pools), attacked over real sockets: a phone keeps getting its
chunks acknowledged, a whole protest behind one address joins, nothing but
nginx faces the network, TLS speaks HTTP/2, and no client address reaches a
log or the disk.

Clients here connect from 127.0.0.9 or 127.0.0.10 (all of 127.0.0.0/8 is
loopback), so the server's own address (127.0.0.1) is never mistaken for a
client's when the logs and files are searched."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.attacker import session_from
from tests.e2e.test_malformed import MALFORMED, exchange
from tests.support import PROJECT_ROOT, Phone, Recording, ServerProcess, proxied_request

pytestmark = pytest.mark.slow

PHONE_ADDRESS = "127.0.0.9"
CHUNK_BYTES = 256 * 1024


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def _upload_every_half_second(recording, first_index: int, seconds: float) -> tuple[list[float], list[int]]:
    """PUT a 256 KiB chunk every 0.5 s for `seconds`; the latencies and
    every status answered."""
    latencies, statuses = [], []
    index = first_index
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        due = start + (index - first_index) * 0.5
        time.sleep(max(0.0, due - time.monotonic()))
        body = recording.chunk(index, os.urandom(CHUNK_BYTES - 16))
        sent = time.monotonic()
        try:
            answer = recording.put(index, body)
            statuses.append(answer.status_code)
        except requests.RequestException as exc:
            statuses.append(type(exc).__name__)
        latencies.append(time.monotonic() - sent)
        index += 1
    return latencies, statuses


def _files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                pass
    return found


def test_a_phone_keeps_getting_acknowledgements_while_strangers_attack(tmp_path):
    server = ServerProcess(tmp_path / "server", idle_seconds=30).start()
    try:
        phone = Phone(server, http=session_from(PHONE_ADDRESS))
        recording = phone.create_recording()

        calm, calm_statuses = _upload_every_half_second(recording, 0, 20)

        attacker = subprocess.Popen(
            [sys.executable, "-m", "tests.attacker", server.url, "--seconds", "20", "--source", PHONE_ADDRESS,
             "--slow-headers", "30", "--slow-bodies", "30", "--logins", "32", "--registrations", "8"],
            # The strangers' own CPU would be on their machines, not the
            # server's: here they run at the lowest priority, so what the phone
            # measures is the server under attack, not two cores shared with
            # the attacking programs.
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.nice(19))
        time.sleep(1)  # let every slow connection open first
        attacked, attacked_statuses = _upload_every_half_second(recording, len(calm), 18)
        report = json.loads(attacker.communicate(timeout=90)[0])

        # The attack was real: 60 slow connections open at once, logins and
        # registrations flooding as fast as answers came.
        assert report["slow_connections_open_at_most"] >= 60, report
        logins, registrations = report["counts"]["logins"], report["counts"]["registrations"]
        assert sum(logins.values()) >= 32 * 20, report
        assert "not_json" not in logins and "not_json" not in registrations, report
        # Strangers were held back at the door: logins past the address's
        # burst refused without a password being checked, registrations held
        # to the burst plus 5 a second however fast they came
        # (docs/operations.md's numbers).
        assert logins.get("429", 0) > logins.get("401", 0), report
        assert registrations.get("201", 0) <= 1200 + 5 * (report["seconds"] + 5), report

        # The phone saw none of it.
        assert set(calm_statuses) == {201} and set(attacked_statuses) == {201}, (calm_statuses, attacked_statuses)
        assert _p99(attacked) <= max(3 * _p99(calm), 0.5), (sorted(calm)[-3:], sorted(attacked)[-3:])
        status = recording.status().json()
        assert status["received"] == [[0, len(calm) + len(attacked) - 1]] and status["missing"] == []
    finally:
        server.stop()
    # Nothing of the client's address anywhere: not in any log line, not in
    # the records, not in any file the server keeps.
    assert PHONE_ADDRESS not in server.log()
    assert _files_containing(server.root, PHONE_ADDRESS.encode()) == []


def test_a_thousand_phones_behind_one_address_all_join_and_a_flood_is_slowed(tmp_path):
    server = ServerProcess(tmp_path / "server", idle_seconds=60).start()
    source = "127.0.0.10"
    keys = requests.get(server.url + "/v1/keys").json()
    sessions = [session_from(source) for _ in range(16)]

    def join(n: int) -> tuple:
        """A phone's first seconds: register, start a recording, send chunk 0."""
        http = sessions[n % len(sessions)]
        try:
            phone = Phone(server, http=http, keys=keys)
        except AssertionError as refused:
            return ("registration refused", str(refused)[:80])
        body, key = phone.recording_body()
        made = http.post(server.url + "/v1/recordings", json=body, headers=phone.auth)
        if made.status_code != 201:
            return ("recording refused", made.status_code)
        recording = Recording(phone, body["recording_id"], key)
        return ("chunk", recording.put(0, recording.chunk(0, os.urandom(4096))).status_code)

    try:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(join, range(1000)))
        took = time.monotonic() - started
        assert outcomes == [("chunk", 201)] * 1000, {o: outcomes.count(o) for o in set(outcomes)}
        assert took < 300

        # The same address going on as fast as it can is held to the rate:
        # refused at once with Retry-After, and what it gets through is what
        # the burst left plus 5 a second (docs/operations.md).
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda n: sessions[n % 16].post(server.url + "/v1/devices", json={}),
                                    range(600)))
        elapsed = time.monotonic() - started
        accepted = [a for a in answers if a.status_code == 201]
        refused = [a for a in answers if a.status_code == 429]
        assert len(accepted) + len(refused) == 600
        assert refused and all(a.json()["error"] == "too_many_requests" and a.headers["Retry-After"]
                               for a in refused)
        assert len(accepted) <= 1200 - 1000 + 5 * (took + elapsed) + 5
    finally:
        server.stop()


def _listening_tcp_ports(pids: set[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _process_group(pgid: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.add(int(entry))
            except ProcessLookupError:
                pass
    return pids


def test_only_nginx_faces_the_network_and_each_pool_serves_its_routes(tmp_path):
    server = ServerProcess(tmp_path / "server").start()
    try:
        pids = _process_group(server.process.pid)
        commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in pids}
        assert any("nginx" in c for c in commands.values())
        assert sum("gunicorn" in c and "staff.sock" in c for c in commands.values()) >= 1
        assert sum("gunicorn" in c and "ingest.sock" in c for c in commands.values()) >= 1
        # gunicorn listens on unix sockets only: the public port is the one
        # TCP port any of these processes listens on.
        assert _listening_tcp_ports(pids) == {server.port}
        # The staff pool (logins, pages, bundles, background jobs) runs at a
        # lower CPU priority than the ingest pool.
        niceness = {pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) for pid in pids}
        staff = [niceness[p] for p, c in commands.items() if "staff.sock" in c]
        ingest = [niceness[p] for p, c in commands.items() if "ingest.sock" in c]
        assert min(staff) > max(ingest)

        # A request that reaches the app is answered by it, through either pool.
        phone = Phone(server)
        recording = phone.create_recording()
        assert recording.put(0, recording.chunk(0)).status_code == 201
        assert requests.post(server.url + "/v1/auth/login",
                             json={"username": "nobody", "password": "not-a-password"}).json()["error"] \
            == "bad_credentials"

        def pools():  # from nginx's access log, which it writes after answering
            lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{") and '"pool"' in line]
            return {(line["method"], line["path"]): line["pool"] for line in lines}

        server.wait_for(lambda: ("POST", "/v1/auth/login") in pools())
        assert pools()[("PUT", f"/v1/recordings/{recording.id}/chunks/0")] == "ingest"
        assert pools()[("POST", "/v1/auth/login")] == "staff"

        # The request log keeps no enrollment code, in a query or a path.
        requests.get(server.url + "/record?code=SECRETQUERYCODE")
        requests.post(server.url + "/v1/enrollment-codes/SECRETPATHCODE/revoke")
        server.wait_for(lambda: ("POST", "/v1/enrollment-codes/{code}/revoke") in pools())
        assert ("GET", "/record") in pools()
        assert "SECRETQUERYCODE" not in server.log() and "SECRETPATHCODE" not in server.log()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI
    (real clock: the server checks nothing with a test clock here)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_tls_serves_http2_and_http1_and_answers_plain_http_in_json(tmp_path, tls_files):
    cert, key = tls_files
    server = ServerProcess(tmp_path / "server", WITNESS_TLS_CERT=cert, WITNESS_TLS_KEY=key).start()
    try:
        assert server.url.startswith("https://")
        for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
            out = subprocess.run(["curl", "-s", flag, "--cacert", str(cert), "-o", "/dev/null",
                                  "-w", "%{http_version} %{http_code}", server.url + "/v1/keys"],
                                 capture_output=True, text=True, timeout=20).stdout
            assert out == f"{version} 200"
        # The phone's path works over TLS.
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify
        session.verify = str(cert)
        phone = Phone(server, http=session)
        recording = phone.create_recording()
        assert recording.put(0, recording.chunk(0)).status_code == 201
        # Plain HTTP to the TLS port: a JSON answer saying what to do.
        plain = requests.get(f"http://127.0.0.1:{server.port}/v1/keys")
        assert plain.status_code == 400 and plain.json()["error"] == "https_required"
    finally:
        server.stop()


def test_witness_serve_refuses_a_wrong_configuration_in_plain_words(tmp_path):
    env = {**os.environ, "WITNESS_DATA_DIR": str(tmp_path / "d"), "WITNESS_KEYS_DIR": str(tmp_path / "k")}
    for extra, words in (({"WITNESS_BIND": "not an address"}, "WITNESS_BIND"),
                         ({"WITNESS_TLS_CERT": str(tmp_path / "missing.pem")}, "WITNESS_TLS_KEY"),
                         ({"WITNESS_LIMIT_LOGIN_RATE": "-3"}, "WITNESS_LIMIT_LOGIN_RATE"),
                         ({"WITNESS_PROXY_PROTOCOL_FROM": "10.0.0.0/33"}, "WITNESS_PROXY_PROTOCOL_FROM")):
        done = subprocess.run([sys.executable, "-m", "server.frontdoor"], env={**env, **extra}, cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr


def test_behind_balancers_each_phone_is_limited_by_its_own_address_and_none_is_written(tmp_path):
    # Several nodes behind TCP balancers (README, "Several app nodes"): the
    # balancer's PROXY header names the phone, so a flood from one address
    # does not use up the limits of the phones behind the same balancer.
    server = ServerProcess(tmp_path / "proxied", WITNESS_PROXY_PROTOCOL_FROM="127.0.0.1",
                           WITNESS_LIMIT_REGISTRATION_BURST=3, WITNESS_LIMIT_REGISTRATION_RATE=1).start()
    register = "POST /v1/devices HTTP/1.1\r\nHost: witness\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    flooder, phone, ipv6_phone = "203.0.113.77", "198.51.100.23", "2001:db8::4711"
    try:
        flood = [proxied_request(server, flooder, register)[0] for _ in range(8)]
        assert flood.count(201) <= 5 and flood[-1] == 429  # the burst, then refused
        assert proxied_request(server, phone, register)[0] == 201  # a phone behind the same balancer
        assert proxied_request(server, ipv6_phone, register)[0] == 201
        # A connection that does not speak the PROXY protocol gets nothing.
        with pytest.raises(requests.ConnectionError):
            requests.post(server.url + "/v1/devices", json={}, timeout=5)
    finally:
        server.stop()
    written = server.log() + "".join(p.read_text(errors="replace") for p in server.data_dir.rglob("*.log"))
    for address in (flooder, phone, ipv6_phone, "2001:db8:0:0:0:0:0:4711"):
        assert address not in written


def test_nginx_error_lines_lose_every_client_address():
    from server.frontdoor import scrub_log_line

    line = ('<11>Dec  2 03:22:01 nginx: 2026/12/02 03:22:01 [error] 77#77: *5 client intended to send too large '
            'body: 5000000 bytes, client: 203.0.113.7, server: _, request: "GET /record?code=SECRET HTTP/1.1", '
            'upstream: "http://[2001:db8::1]:80/", host: "witness.example", referrer: "https://203.0.113.7/x"')
    revoke = scrub_log_line('[error] 7#7: *9 upstream timed out, client: 198.51.100.4, server: _, '
                            'request: "POST /v1/enrollment-codes/SECRETCODE/revoke HTTP/1.1"')
    assert "SECRETCODE" not in revoke and "198.51.100.4" not in revoke and "/v1/enrollment-codes/{code}/revoke" in revoke
    scrubbed = scrub_log_line(line)
    assert "203.0.113.7" not in scrubbed and "2001:db8::1" not in scrubbed and "SECRET" not in scrubbed
    assert scrubbed.startswith("2026/12/02 03:22:01 [error]") and "too large body" in scrubbed
    assert re.search(r'request: "GET /record HTTP/1.1"', scrubbed)


def _served_certificate(port: int) -> str:
    import ssl

    return ssl.get_server_certificate(("127.0.0.1", port))


def test_sighup_reads_a_renewed_certificate_without_stopping(tmp_path, tls_files):
    cert, key = tls_files
    live_cert, live_key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    live_cert.write_bytes(cert.read_bytes())
    live_key.write_bytes(key.read_bytes())
    server = ServerProcess(tmp_path / "server", WITNESS_TLS_CERT=live_cert, WITNESS_TLS_KEY=live_key).start()
    try:
        before = _served_certificate(server.port)
        assert before.strip() == cert.read_text().strip()
        # A renewal writes a new certificate and key in place, then reloads.
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(live_key), "-out", str(live_cert), "-days", "2", "-subj", "/CN=renewed",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        os.kill(server.process.pid, signal.SIGHUP)
        server.wait_for(lambda: _served_certificate(server.port).strip() == live_cert.read_text().strip())
        assert server.process.poll() is None
        assert "reloaded nginx" in server.log()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def front_door(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("front-door")).start()
    yield server
    server.stop()


@pytest.mark.parametrize("raw,half_close", [row[1:3] for row in MALFORMED], ids=[row[0] for row in MALFORMED])
def test_malformed_requests_through_the_front_door_get_json_or_a_closed_connection(front_door, raw, half_close):
    # The same table gunicorn is held to (test_malformed.py). nginx answers
    # most of it itself, with its own codes; a few it tolerates and passes on
    # re-written as well-formed HTTP (two spaces, bare LF line ends, an odd
    # header name it drops, an Expect it ignores), which the app then
    # answers. Either way: JSON or a closed connection, never HTML, never a
    # 5xx the app made.
    answer = exchange(front_door, raw, half_close=half_close)
    if answer is None:
        return
    assert b"<html" not in answer.body.lower() and b"<!doctype" not in answer.body.lower()
    assert answer.headers["content-type"].startswith("application/json"), answer
    body = json.loads(answer.body)
    if answer.status >= 400:
        assert isinstance(body.get("error"), str) and body.get("message"), body
    assert answer.status < 500 or body["error"] in ("not_implemented", "http_version_not_supported"), body
