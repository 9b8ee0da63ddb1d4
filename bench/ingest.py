#!/usr/bin/env python3
"""Ingest benchmark: N simulated phones uploading encrypted chunks.

Each phone registers over HTTP (`POST /v1/devices`), creates its own recording
(content key sealed with HPKE to the server's key) and then PUTs real
AES-256-GCM chunks (PROTOCOL.md "Chunks": nonce, AAD, Content-Digest) of
256 KiB on its own keep-alive connection, one request in flight per phone.

Two kinds of run:

* paced      - every phone sends one chunk per second on a fixed schedule
               (phase spread over the first second); a phone whose previous
               chunk is not yet acknowledged when the next is due sends late,
               back to back, and that lateness is reported;
* saturation - every phone sends its next chunk as soon as the previous
               acknowledgement arrives (closed loop).

Next to every run the "physical peer" is measured on the same disk, in one
process: SHA-256 + write + fsync + rename + fsync(dir) of 256 KiB files, as
fast as possible. Server throughput is reported as a ratio of that ceiling,
so numbers taken on a noisy shared machine can be compared.

Two Witness doors (`--door`, default both): for every run spec a fresh server is
started, the spec run against it, and the server stopped, once as plain
`gunicorn wsgi:app` (gunicorn.conf.py; "direct") and once as `witness-serve`
(`python -m server.frontdoor`: nginx in front of the ingest and staff pools
on unix sockets; "front"), both with the same ingest workers x threads and
fresh temporary data and keys folders. The two runs of a spec follow each
other (the order alternates from spec to spec), so both see the same machine,
and a "front door vs direct" table gives their ratios. Server CPU is every
process of the server: all descendants of what was started (for the front
door the launcher, nginx's master and workers, both gunicorn masters and
their workers). `--url` targets a server that is already running instead
(loopback only).

Two more doors run the peer the capacity goals are measured against, stock
tus-node (@tus/server + @tus/file-store, versions pinned in
bench/peers/package.json and package-lock.json, installed with `npm ci` into
bench/peers/node_modules when missing): `tus` is `node
bench/peers/tus_server.mjs`, one Node process writing uploads into a fresh
folder, and `tus-fsync` the same with an fsync of the upload file before
every PATCH's 204. Their phones create one upload each (`POST /files`,
`Upload-Defer-Length: 1`) and append every 256 KiB chunk with `PATCH`
(`Upload-Offset`); the 204 is the acknowledgement. `--door` takes a comma
list (`--door front,tus,tus-fsync`): every spec runs on each door back to
back, the order alternating from spec to spec, and a "Witness Sync vs tus"
table gives the ratios. Registration (device and recording, or the tus
upload's creation) is done before the measured window, for every door.

Three backends for the Witness doors (`--backend`, a comma list, default
`embedded`): `embedded` keeps records in SQLite and chunks in files under the
data folder; `postgresql` keeps the records on PostgreSQL
(`WITNESS_DATABASE_URL`), chunks still in files; `scaleout` is the several-
nodes deployment, records on PostgreSQL and chunks on S3
(`WITNESS_CHUNK_STORE=s3://...`, `WITNESS_S3_ENDPOINT_URL`, `AWS_*`). For
those two the bench starts, once per benchmark and before anything is timed,
a throwaway PostgreSQL cluster and a SeaweedFS (`weed server -s3`) with the
tests' own start-up code (tests/postgres.py, tests/services.py), gives every
server start a fresh database and bucket prefix, and removes both at the
end, also after an error, Ctrl-C or SIGTERM. Each Witness door runs on each
backend back to back with the other doors; the tus doors once per spec.
PostgreSQL's and SeaweedFS's processes are not the server's: their CPU over
the same window is reported beside it, and "CPU ms/ack incl. services" and a
"backends" table give what a chunk costs the whole deployment.

Nothing here asserts on timings; it measures and prints a markdown table.

    .venv/bin/python bench/ingest.py            # full run, a few minutes
    .venv/bin/python bench/ingest.py --quick    # smoke run, both doors, about 1 min
    .venv/bin/python bench/ingest.py --door direct   # gunicorn only, as before
    .venv/bin/python bench/ingest.py --door front,tus,tus-fsync --paced 500 --saturation 64 --seconds 20
    .venv/bin/python bench/ingest.py --door front,tus --backend embedded,scaleout --paced 500 --saturation 64
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import ipaddress
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey  # noqa: E402

from crypto.aead import TAG_BYTES, encrypt_chunk, new_content_key, seal_content_key  # noqa: E402

CHUNK_BYTES = 256 * 1024          # ciphertext size on the wire (plaintext + 16-byte tag)
LATE_THRESHOLD_S = 0.1            # a paced send starting later than this after its slot is "late"
RETRY_PAUSE_S = 0.5               # pause before resending a chunk that was not acknowledged
HARD_CAP_SECONDS_PER_RUN = 300    # no single run may exceed this, whatever the options
CLK_TCK = os.sysconf("SC_CLK_TCK")
DOORS = ("direct", "front")           # `--door both`, the default
TUS_DOORS = ("tus", "tus-fsync")      # stock tus-node, the peer the capacity goals are measured against
ALL_DOORS = (*DOORS, *TUS_DOORS)
# Where a Witness door keeps its records and chunks (`--backend`): the embedded
# default (SQLite + chunk files in the data folder), the records on PostgreSQL
# (chunks still local), or the scale-out deployment (PostgreSQL + S3).
BACKENDS = ("embedded", "postgresql", "scaleout")
S3_BUCKET = "witness-bench"
# nginx's per-address limits (server/frontdoor.py AddressLimits). Every
# simulated phone comes from 127.0.0.1, so a run with more phones than a
# burst would be refused by the front door; only then does the bench raise
# that burst, in the front door's environment, and says so in the report.
FRONT_DOOR_BURSTS = {"WITNESS_LIMIT_REGISTRATION_BURST": 1200, "WITNESS_LIMIT_RECORDING_BURST": 2000,
                     "WITNESS_LIMIT_CONNECTIONS_PER_ADDRESS": 4096}


def process_parents() -> dict[int, int]:
    """pid -> parent pid of every process, read from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(root: int) -> list[int]:
    """`root` and every process below it, at any depth (root first)."""
    children: dict[int, list[int]] = {}
    parents = process_parents()
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo, seen = [], [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if pid in parents:
            found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- HTTP

class HttpError(Exception):
    """Transport failure (connection refused/reset/closed, malformed answer)."""


class Connection:
    """One keep-alive HTTP/1.1 connection, minimal and cheap: the load
    generator shares two cores with the server, so no requests/urllib3."""

    def __init__(self, host: str, port: int, chunked_ok: bool = False):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = False
        self.reconnects = 0
        # Witness Sync always answers with a Content-Length; tus-node answers
        # its 201 with an empty chunked body, so the tus phones accept that.
        self.chunked_ok = chunked_ok
        self.headers: dict[str, str] = {}   # the last answer's headers, names lower-case

    async def _connect(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.used = False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request, return (status, body). A request that fails on
        a reused connection before any answer byte (the server closed it while
        idle) is sent once more on a new connection, as HTTP clients do."""
        for attempt in (0, 1):
            if self.writer is None:
                await self._connect()
            reused = self.used
            head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                    f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            try:
                self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                if body:
                    self.writer.write(body)
                await self.writer.drain()
                status_line = await self.reader.readline()
            except (ConnectionError, OSError) as exc:
                self.close()
                if reused and attempt == 0:
                    self.reconnects += 1
                    continue
                raise HttpError(f"send failed: {exc!r}") from None
            if not status_line:
                self.close()
                if reused and attempt == 0:
                    self.reconnects += 1
                    continue
                raise HttpError("connection closed before an answer")
            return await self._read_rest(status_line, bodyless=method == "HEAD")
        raise HttpError("unreachable")

    async def _read_rest(self, status_line: bytes, bodyless: bool = False) -> tuple[int, bytes]:
        try:
            parts = status_line.split(None, 2)
            status = int(parts[1])
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, OSError) as exc:
            self.close()
            raise HttpError(f"bad answer: {exc!r}") from None
        length, close, chunked = 0, False, False
        self.headers = {}
        for line in raw.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name:
                self.headers[name] = value.strip()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                if not self.chunked_ok:
                    self.close()
                    raise HttpError("chunked answers are not expected from this server")
                chunked = True
        if bodyless or status in (204, 304) or 100 <= status < 200:
            length, chunked = 0, False    # no body, whatever the headers say
        try:
            if chunked:
                payload = await self._read_chunked()
            else:
                payload = await self.reader.readexactly(length) if length else b""
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, OSError) as exc:
            self.close()
            raise HttpError(f"answer cut short: {exc!r}") from None
        self.used = True
        if close:
            self.close()
        return status, payload

    async def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":   # trailers, if any
                    pass
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


# --------------------------------------------------------------------------- phones


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def content_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Sample:
    index: int
    scheduled: float      # loop time the send was due (paced) or became possible (saturation)
    sent: float           # loop time the request started
    done: float           # loop time the answer (or failure) arrived
    status: int           # HTTP status, 0 for transport failure, -1 for timeout
    error: str = ""
    acked: bool = False   # the phone's acknowledgement (Witness: 200/201; tus: 204)


class Phone:
    """A Witness Sync phone: a device token, a recording, PUT per chunk."""

    ACKS = (200, 201)

    def __init__(self, number: int, host: str, port: int, plaintext: bytes):
        self.number = number
        self.conn = Connection(host, port)
        self.plaintext = plaintext
        self.token = ""
        self.recording_id = str(uuid.uuid4())
        self.key = new_content_key()
        self.samples: list[Sample] = []
        self.next_index = 0

    async def register(self, keys: dict, timeout: float) -> None:
        status, body = await asyncio.wait_for(
            self.conn.request("POST", "/v1/devices", {"Content-Type": "application/json"}, b"{}"), timeout)
        if status != 201:
            raise RuntimeError(f"device registration answered {status}: {body[:300]!r}")
        self.token = json.loads(body)["access_token"]
        public = X25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(keys["hpke"]["public_key"] + "=="))
        recording = json.dumps({
            "recording_id": self.recording_id,
            "content_type": "video/mp4",
            "started_at": rfc3339(time.time()),
            "key_id": keys["hpke"]["key_id"],
            "sealed_key": b64url(seal_content_key(public, self.recording_id, self.key)),
        }).encode()
        status, body = await asyncio.wait_for(self.conn.request(
            "POST", "/v1/recordings",
            {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}, recording), timeout)
        if status != 201:
            raise RuntimeError(f"recording creation answered {status}: {body[:300]!r}")

    def build_chunk(self, index: int) -> tuple[bytes, dict]:
        """A valid chunk `index` of this recording, encrypted now (AES-GCM
        ~9 GB/s + SHA-256 ~1.75 GB/s: about 0.2 ms per 256 KiB chunk)."""
        body = encrypt_chunk(self.key, self.recording_id, index, self.plaintext, final=False)
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/octet-stream",
            "Content-Digest": content_digest(body),
            "Witness-Captured-At": rfc3339(time.time()),
        }
        return body, headers

    async def put(self, index: int, body: bytes, headers: dict, timeout: float) -> tuple[int, str]:
        path = f"/v1/recordings/{self.recording_id}/chunks/{index}"
        try:
            status, answer = await asyncio.wait_for(self.conn.request("PUT", path, headers, body), timeout)
        except asyncio.TimeoutError:
            self.conn.close()  # state of the stream unknown
            return -1, "timeout"
        except HttpError as exc:
            return 0, str(exc)
        if status in (200, 201):
            return status, ""
        try:
            code = json.loads(answer).get("error", "")
        except ValueError:
            code = "non-json answer: " + answer[:120].decode("utf-8", "replace")
        return status, code

    async def run(self, *, mode: str, start: float, stop: float, phase: float, timeout: float) -> None:
        """Send chunks 0, 1, 2, ... until `stop` (loop time). Paced: chunk i
        is due at start + phase + i seconds. Saturation: each chunk is due
        when the previous one is acknowledged. A chunk that is not
        acknowledged is sent again (same bytes) after a short pause."""
        loop = asyncio.get_running_loop()
        index = 0
        body, headers = self.build_chunk(index)
        due = start + phase
        while True:
            now = loop.time()
            if due >= stop:
                break
            if due > now:
                await asyncio.sleep(due - now)
            sent = loop.time()
            if sent >= stop:
                break
            status, error = await self.put(index, body, headers, timeout)
            done = loop.time()
            acked = status in self.ACKS
            self.samples.append(Sample(index, due, sent, done, status, error, acked))
            if acked:
                index += 1
                body, headers = self.build_chunk(index)  # off the measured path
                due = start + phase + index if mode == "paced" else loop.time()
            else:
                due = max(due, loop.time() + RETRY_PAUSE_S)
        self.next_index = index


class TusPhone(Phone):
    """A tus client of stock tus-node: one upload per phone, created with
    `POST /files` (`Tus-Resumable: 1.0.0`, `Upload-Defer-Length: 1`: the
    length of a recording is not known while it is filmed, and FileStore
    supports the creation-defer-length extension), then every 256 KiB chunk
    appended with `PATCH <Location>` (`Upload-Offset`, `Content-Type:
    application/offset+octet-stream`); the acknowledgement is the 204, whose
    `Upload-Offset` must be the chunk's end. The bodies are random bytes of
    the Witness chunk's length (one buffer shared by all tus phones: tus-node
    does not look into them). A PATCH that is not acknowledged is followed by
    a `HEAD` before the retry, as tus clients do, and the retry sends only
    what the server does not hold yet (both inside the retry's latency)."""

    ACKS = (204,)

    def __init__(self, number: int, host: str, port: int, body: bytes):
        self.number = number
        self.conn = Connection(host, port, chunked_ok=True)
        self.body = body
        self.location = ""
        self.offset = 0               # what the server holds, as far as this phone knows
        self.resync = False
        self.samples: list[Sample] = []
        self.next_index = 0

    async def register(self, keys: dict, timeout: float) -> None:
        """Create the upload (no device or recording: tus has neither)."""
        status, body = await asyncio.wait_for(self.conn.request(
            "POST", "/files", {"Tus-Resumable": "1.0.0", "Upload-Defer-Length": "1"}), timeout)
        location = self.conn.headers.get("location", "")
        if status != 201 or not location:
            raise RuntimeError(f"tus upload creation answered {status}: {body[:300]!r}")
        self.location = urlsplit(location).path

    def build_chunk(self, index: int) -> tuple[bytes, dict]:
        return self.body, {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}

    async def _head(self, timeout: float) -> str:
        status, _ = await asyncio.wait_for(
            self.conn.request("HEAD", self.location, {"Tus-Resumable": "1.0.0"}), timeout)
        if status != 200 or "upload-offset" not in self.conn.headers:
            return f"HEAD answered {status}"
        self.offset = int(self.conn.headers["upload-offset"])
        self.resync = False
        return ""

    async def put(self, index: int, body: bytes, headers: dict, timeout: float) -> tuple[int, str]:
        begin, end = index * len(body), (index + 1) * len(body)
        try:
            if self.resync:
                problem = await self._head(timeout)
                if problem:
                    return 0, problem
            if self.offset >= end:
                return 204, ""        # the lost answer's PATCH had arrived whole
            piece = body[self.offset - begin:] if self.offset > begin else body
            status, answer = await asyncio.wait_for(self.conn.request(
                "PATCH", self.location, {**headers, "Upload-Offset": str(max(self.offset, begin))}, piece),
                timeout)
        except asyncio.TimeoutError:
            self.conn.close()
            self.resync = True
            return -1, "timeout"
        except HttpError as exc:
            self.resync = True
            return 0, str(exc)
        if status == 204:
            offset = int(self.conn.headers.get("upload-offset", "-1"))
            if offset != end:
                self.resync = True
                return 0, f"204 with Upload-Offset {offset}, expected {end}"
            self.offset = offset
            return status, ""
        self.resync = True
        return status, answer[:80].decode("utf-8", "replace").strip()


# --------------------------------------------------------------------------- server under test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_python() -> str:
    venv = PROJECT_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class Server:
    """`gunicorn wsgi:app` as an operator starts it (gunicorn.conf.py), on
    127.0.0.1 with fresh data and keys folders: the "direct" door."""

    door = "direct"

    def __init__(self, root: Path, log_path: Path, workers: int, threads: int):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.workers, self.threads = workers, threads
        self.env = {
            **os.environ,
            "WITNESS_BIND": f"127.0.0.1:{self.port}",
            "WITNESS_DATA_DIR": str(root / "data"),
            "WITNESS_KEYS_DIR": str(root / "keys"),
            # Finalization is not what this measures: keep it out of the window.
            "WITNESS_IDLE_FINALIZE_SECONDS": "3600",
            # Set for both doors, so both have the same ingest pool.
            "WITNESS_WORKERS": str(workers),
            "WITNESS_THREADS": str(threads),
        }
        # Each door with its default logging: gunicorn none, the front door
        # nginx's JSON access line per request on standard output (the log).
        self.env.pop("WITNESS_ACCESS_LOG", None)
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [server_python(), "-m", "gunicorn", "wsgi:app"]

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=PROJECT_ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    async def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start-up; log: {self.log_path}")
            conn = Connection("127.0.0.1", self.port)
            try:
                status, body = await asyncio.wait_for(conn.request("GET", "/v1/keys", {}), 2)
                if status == 200:
                    return json.loads(body)
                last = f"GET /v1/keys answered {status}"
            except (HttpError, OSError, asyncio.TimeoutError) as exc:
                last = repr(exc)
            finally:
                conn.close()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout} s ({last}); log: {self.log_path}")

    def pids(self) -> list[int]:
        """Every process of the server: what was started and all its
        descendants (gunicorn's master and workers)."""
        if self.process is None:
            return []
        return descendants(self.process.pid)

    def expected_workers(self) -> int:
        """How many "Booting worker" lines a start without respawns logs."""
        return self.workers

    def expected_processes(self) -> int:
        return 1 + self.workers

    def roles(self) -> dict[int, str]:
        """pid -> which part of the server it is, for the CPU breakdown."""
        master = self.process.pid if self.process else None
        return {pid: "master" if pid == master else "worker" for pid in self.pids()}

    def cpu_seconds(self) -> dict[int, float]:
        return process_cpu_seconds(self.pids())

    def stop(self) -> None:
        """SIGTERM to gunicorn's master, which stops its workers gracefully
        (a signal to the whole group would also reach each worker directly
        and the master would log "Worker ... was sent SIGTERM!"); SIGKILL to
        the group after 25 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def cleanup(self) -> None:
        """Anything the server left outside `root` (nothing, for gunicorn)."""


class FrontDoorServer(Server):
    """`witness-serve` (`python -m server.frontdoor`) as scripts/serve starts
    it: nginx on 127.0.0.1:PORT in front of the ingest pool (the same
    WITNESS_WORKERS x WITNESS_THREADS as the direct server) and the staff
    pool (its defaults, or WITNESS_STAFF_WORKERS/_THREADS from the caller),
    with its own short run folder under /tmp (unix socket paths are limited
    to 107 bytes): the "front" door."""

    door = "front"

    def __init__(self, root: Path, log_path: Path, workers: int, threads: int,
                 limit_overrides: dict[str, str] | None = None):
        super().__init__(root, log_path, workers, threads)
        self.run_dir = Path(tempfile.mkdtemp(prefix="wsb-", dir="/tmp"))
        self.env["WITNESS_RUN_DIR"] = str(self.run_dir)
        self.env.update(limit_overrides or {})
        # What the front door will start for its staff pool (server/frontdoor.py's defaults).
        self.staff_workers = int(self.env.get("WITNESS_STAFF_WORKERS") or 2)
        self.staff_threads = int(self.env.get("WITNESS_STAFF_THREADS") or 4)

    def command(self) -> list[str]:
        return [server_python(), "-m", "server.frontdoor"]

    def expected_workers(self) -> int:
        return self.workers + self.staff_workers

    def expected_processes(self) -> int:
        # launcher, nginx master + `worker_processes auto` (one per CPU), two gunicorn masters, workers
        return 1 + 1 + (os.cpu_count() or 1) + 2 + self.expected_workers()

    def roles(self) -> dict[int, str]:
        """launcher; nginx master / worker; ingest and staff master / worker,
        told apart by the launcher's child each process descends from."""
        if self.process is None:
            return {}
        launcher = self.process.pid
        parents = process_parents()
        roles = {}
        for pid in descendants(launcher):
            if pid == launcher:
                roles[pid] = "launcher"
                continue
            chain = [pid]
            while parents.get(chain[-1], launcher) != launcher:
                chain.append(parents[chain[-1]])
            top = chain[-1]                      # the launcher's child above pid
            words = command_line(top)
            part = ("nginx" if "nginx" in words.split(" ", 1)[0]
                    else "ingest" if "ingest.sock" in words
                    else "staff" if "staff.sock" in words else "other")
            roles[pid] = f"{part} {'master' if pid == top else 'worker'}"
        return roles

    def stop(self) -> None:
        """SIGTERM to the launcher only, which stops nginx (gracefully) and
        both pools in its own order; SIGKILL to the whole group if that takes
        longer than the launcher's own 25 s limit and some margin."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # Whatever is left of the group (nothing, after a clean stop).
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def cleanup(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


PEERS_DIR = PROJECT_ROOT / "bench" / "peers"
TUS_PACKAGES = ("@tus/server", "@tus/file-store")


def tus_versions() -> dict[str, str]:
    """Versions installed in bench/peers/node_modules ({} when missing)."""
    out = {}
    for name in TUS_PACKAGES:
        try:
            out[name] = json.loads((PEERS_DIR / "node_modules" / name / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            pass
    return out


def ensure_tus_installed() -> dict[str, str]:
    """`npm ci` into bench/peers/node_modules (the versions package-lock.json
    pins) unless what is installed already matches package.json exactly.
    Optional dependencies (the Redis clients, for tus-node's Redis lockers and
    stores) and install scripts are left out: neither is used."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise RuntimeError("the tus doors need Node.js (node and npm on PATH)")
    wanted = json.loads((PEERS_DIR / "package.json").read_text())["dependencies"]
    if tus_versions() != {name: wanted[name] for name in TUS_PACKAGES}:
        print("# installing the tus peer: npm ci in bench/peers ...", file=sys.stderr, flush=True)
        done = subprocess.run([npm, "ci", "--omit=optional", "--ignore-scripts", "--no-audit", "--no-fund"],
                              cwd=PEERS_DIR, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"npm ci in {PEERS_DIR} failed: {(done.stderr or done.stdout)[-800:]}")
    versions = tus_versions()
    if versions != {name: wanted[name] for name in TUS_PACKAGES}:
        raise RuntimeError(f"bench/peers/node_modules holds {versions}, package.json pins {wanted}")
    return versions


class TusServer(Server):
    """Stock tus-node: `node bench/peers/tus_server.mjs`, @tus/server with
    @tus/file-store writing into a fresh folder, on 127.0.0.1:PORT, one Node
    process (the "tus" door); with `fsync` every PATCH's file is fsynced
    before the 204 ("tus-fsync"). Its log holds only a start line and one
    JSON line per error answer."""

    def __init__(self, root: Path, log_path: Path, fsync: bool):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.fsync = fsync
        self.door = "tus-fsync" if fsync else "tus"
        self.workers, self.threads = 1, 1
        self.env = {**os.environ, "NODE_ENV": "production"}
        for name in ("DEBUG", "NODE_OPTIONS", "UV_THREADPOOL_SIZE"):   # tus-node as it ships
            self.env.pop(name, None)
        self.process = None

    def command(self) -> list[str]:
        return [shutil.which("node") or "node", str(PEERS_DIR / "tus_server.mjs"), "--port", str(self.port),
                "--dir", str(self.root / "uploads"), *(["--fsync"] if self.fsync else [])]

    async def wait_ready(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tus server exited at start-up; log: {self.log_path}")
            conn = Connection("127.0.0.1", self.port, chunked_ok=True)
            try:
                status, _ = await asyncio.wait_for(conn.request("OPTIONS", "/files", {}), 2)
                if status == 204 and conn.headers.get("tus-version"):
                    return {}
                last = f"OPTIONS /files answered {status}"
            except (HttpError, OSError, asyncio.TimeoutError) as exc:
                last = repr(exc)
            finally:
                conn.close()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"tus server not ready in {timeout} s ({last}); log: {self.log_path}")

    def expected_workers(self) -> int:
        return 0

    def expected_processes(self) -> int:
        return 1

    def roles(self) -> dict[int, str]:
        return {pid: "node" for pid in self.pids()}

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Services:
    """The throwaway services the `postgresql` and `scaleout` backends need,
    started once per benchmark run with the tests' own start-up code
    (tests/postgres.py: a fresh cluster on a free loopback port in a folder
    of its own under /tmp, run as the `postgres` user when running as root;
    tests/services.py: `weed server -s3` on free loopback ports, one bucket
    whose writes are fsync'd before they are answered). Every server start
    gets a database of its own (`CREATE DATABASE`, dropped after its run)
    and, for `scaleout`, a prefix of its own in the bucket. `stop()` removes
    both services and their data, keeping their logs in `log_dir`."""

    def __init__(self, backends: list[str], root: Path, log_dir: Path):
        self.backends = backends
        self.root, self.log_dir = root, log_dir
        self.postgres = None        # tests.postgres.PostgreSQL
        self.seaweedfs = None       # tests.services.SeaweedFS

    @property
    def needed(self) -> bool:
        return any(b != "embedded" for b in self.backends)

    def start(self) -> "Services":
        # The tests' package: one copy of the start-up code (bench is not a
        # package; PROJECT_ROOT is on sys.path).
        from tests.postgres import PostgreSQL
        from tests.services import SeaweedFS

        if any(b in ("postgresql", "scaleout") for b in self.backends):
            print("# starting a throwaway PostgreSQL cluster ...", file=sys.stderr, flush=True)
            self.postgres = PostgreSQL(self.log_dir).start()
            self.postgres.wait_until_up()
        if "scaleout" in self.backends:
            print("# starting a throwaway SeaweedFS (weed server -s3) ...", file=sys.stderr, flush=True)
            self.seaweedfs = SeaweedFS(self.root / "seaweedfs").start()
            self.seaweedfs.bucket(S3_BUCKET)
        return self

    def env(self, backend: str) -> dict[str, str]:
        """What one server start needs for `backend`: a fresh database and,
        for scaleout, a fresh prefix in the bucket."""
        if backend == "embedded":
            return {}
        env = {"WITNESS_DATABASE_URL": self.postgres.new_database()}
        if backend == "scaleout":
            env.update(self.seaweedfs.env(f"s3://{S3_BUCKET}/{uuid.uuid4().hex}"))
        return env

    def release(self, env: dict[str, str]) -> None:
        """Drop a run's database once its server has stopped (the cluster
        stays as small as at the first run). The bucket's objects stay until
        `stop()` removes the whole store."""
        url = env.get("WITNESS_DATABASE_URL")
        if not url or self.postgres is None:
            return
        import psycopg

        try:
            with psycopg.connect(self.postgres.url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        except psycopg.Error as exc:
            print(f"# could not drop {url}: {exc}", file=sys.stderr)

    def postgres_root_pid(self) -> int | None:
        """The postmaster (pg_ctl daemonizes it: not a child of the bench)."""
        if self.postgres is None:
            return None
        try:
            return int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> dict[str, list[int]]:
        """Every process of each service: the postmaster and its backends;
        `weed` and anything below it."""
        out = {}
        root = self.postgres_root_pid()
        if root is not None:
            out["postgresql"] = descendants(root)
        if self.seaweedfs is not None and self.seaweedfs.process is not None:
            out["seaweedfs"] = descendants(self.seaweedfs.process.pid)
        return out

    def cpu_seconds(self, backend: str) -> dict[str, dict[int, float]]:
        """pid -> CPU seconds of each service `backend` uses (PostgreSQL;
        for scaleout also SeaweedFS)."""
        used = {"postgresql": ("postgresql",), "scaleout": ("postgresql", "seaweedfs")}.get(backend, ())
        return {name: process_cpu_seconds(pids) for name, pids in self.pids().items() if name in used}

    def describe(self) -> str:
        parts = []
        if self.postgres is not None:
            version = self.postgres.bin.parent.name
            parts.append(f"PostgreSQL {version} (tests/postgres.py's throwaway cluster: fsync on, "
                         f"shared_buffers=32MB, max_connections=200, on 127.0.0.1:{self.postgres.port})")
        if self.seaweedfs is not None:
            parts.append(f"SeaweedFS `weed server -s3` (tests/services.py; bucket {S3_BUCKET} with fsync on, "
                         f"on 127.0.0.1:{self.seaweedfs.s3_port})")
        return "; ".join(parts)

    def stop(self) -> None:
        """Stop and remove both services (also after an error or Ctrl-C);
        their logs stay in `log_dir`."""
        if self.seaweedfs is not None:
            try:
                self.seaweedfs.stop()
            finally:
                try:
                    shutil.copyfile(self.seaweedfs.log_path, self.log_dir / "seaweedfs.log")
                except OSError:
                    pass
                shutil.rmtree(self.seaweedfs.root, ignore_errors=True)
                self.seaweedfs = None
        if self.postgres is not None:
            self.postgres.remove()        # keeps its log as log_dir/postgresql.log
            self.postgres = None


def process_cpu_seconds(pids: list[int]) -> dict[int, float]:
    """pid -> utime + stime in seconds, for those of `pids` still alive."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return out


LOG_TROUBLE = ("error_lines", "tracebacks", "worker_timeouts", "worker_kills", "worker_respawns",
               "nginx_errors", "nginx_warnings", "http_5xx", "http_4xx", "parts_stopped", "shutdown_problems")
_NGINX_LEVEL = re.compile(r"\[(emerg|alert|crit|error|warn)\] \d+#\d+:")


def scan_log(path: Path, stop_offset: int, workers: int) -> dict:
    """Count the server-log lines that mean trouble. Lines before
    `stop_offset` were written while the benchmark ran; after it, during the
    graceful stop (where "Worker exiting" is normal and not counted).
    `workers` is how many workers a start boots (both pools' for the front
    door); more "Booting worker" lines are respawns.

    gunicorn's lines (both pools' for the front door): tracebacks, ERROR or
    CRITICAL, worker timeouts, kills and respawns. nginx's error log (as
    witness-serve relays it): [error]/[crit]/[alert]/[emerg] lines, [warn]
    lines apart. JSON access lines (nginx's, or gunicorn's when
    WITNESS_ACCESS_LOG is set): every status is tallied in `statuses`, and
    5xx and 4xx answers count as trouble (the load generator counts its own
    errors too; this is the server's side of the same story). witness-serve
    saying one of its parts stopped by itself is `parts_stopped`."""
    counts = {kind: 0 for kind in LOG_TROUBLE}
    statuses: dict[str, int] = {}
    samples: list[str] = []
    if not path.exists():
        return {**counts, "statuses": statuses, "samples": samples}
    raw = path.read_bytes()
    boots = 0
    for part, text in (("run", raw[:stop_offset]), ("stop", raw[stop_offset:])):
        for line in text.decode("utf-8", "replace").splitlines():
            kinds = []
            if line.startswith("{") and '"status"' in line:
                try:
                    status = int(json.loads(line)["status"])
                except (ValueError, KeyError, TypeError):
                    status = None
                if status is not None:
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    if status >= 500:
                        kinds.append("http_5xx")
                    elif status >= 400:
                        kinds.append("http_4xx")
            else:
                if "Traceback (most recent call last)" in line:
                    kinds.append("tracebacks")
                if "WORKER TIMEOUT" in line:
                    kinds.append("worker_timeouts")
                if "was sent SIG" in line or "exited with code" in line:
                    kinds.append("worker_kills")
                if " ERROR " in line or "[ERROR]" in line or "[CRITICAL]" in line or " CRITICAL " in line:
                    kinds.append("error_lines")
                level = _NGINX_LEVEL.search(line)
                if level:
                    kinds.append("nginx_warnings" if level.group(1) == "warn" else "nginx_errors")
                if line.startswith("witness-serve: ") and " stopped (code " in line:
                    kinds.append("parts_stopped")
                if "Booting worker" in line:
                    boots += 1
                    if boots > workers:
                        kinds.append("worker_respawns")
            if part == "stop" and kinds:
                kinds = ["shutdown_problems"]
            for kind in kinds:
                counts[kind] += 1
            if kinds and len(samples) < 8:
                samples.append(line[:300])
    return {**counts, "statuses": statuses, "samples": samples}


# --------------------------------------------------------------------------- machine


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies from /proc/stat's first line."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return user + nice + system + irq + softirq, steal, total


def physical_peer(folder: Path, seconds: float, max_files: int = 20000) -> dict:
    """The raw ceiling of what an acknowledgement needs at least, one process:
    SHA-256 of 256 KiB, write it to a temporary file, fsync, rename, fsync
    the folder. Files are removed afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(CHUNK_BYTES)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    names = []
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    try:
        while count < max_files and time.perf_counter() < deadline:
            digest = hashlib.sha256(data).hexdigest()
            name = f"{count:010d}-{digest[:16]}"
            tmp = folder / f".tmp-{name}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, folder / name)
            os.fsync(dir_fd)
            names.append(name)
            count += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(dir_fd)
        for name in names:
            try:
                os.unlink(folder / name)
            except FileNotFoundError:
                pass
    rate = count / elapsed if elapsed > 0 else 0.0
    return {"chunks_per_s": rate, "mb_per_s": rate * CHUNK_BYTES / 1e6, "files": count, "seconds": elapsed}


# --------------------------------------------------------------------------- one run


@dataclass
class RunSpec:
    name: str
    mode: str         # "paced" or "saturation"
    phones: int
    seconds: float
    warmup: float


@dataclass
class RunResult:
    spec: RunSpec
    numbers: dict = field(default_factory=dict)
    door: str = "direct"      # "direct", "front", "tus", "tus-fsync", or "url" (--url)
    backend: str = ""         # a Witness door's: "embedded", "postgresql", "scaleout"; "" for tus and --url

    @property
    def label(self) -> str:
        """`door` or `door/backend`, for the log lines."""
        return f"{self.door}/{self.backend}" if self.backend else self.door


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def register_all(phones: list[Phone], keys: dict, concurrency: int, timeout: float,
                       deadline: float) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(phone: Phone) -> None:
        async with gate:
            if time.monotonic() > deadline:
                raise RuntimeError("registration exceeded its time budget")
            await phone.register(keys, timeout)

    tasks = [asyncio.ensure_future(one(p)) for p in phones]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # The first failure is the run's: the other phones stop registering
        # (rather than meeting a stopped server, unreported, afterwards).
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def run_one(spec: RunSpec, *, door: str, backend: str, url: str | None, args, root: Path, log_dir: Path,
                  plaintext: bytes, tus_body: bytes, services: Services | None) -> RunResult:
    result = RunResult(spec, door=door, backend=backend)
    n = result.numbers
    name = f"{spec.name}-{door}" + (f"-{backend}" if backend else "")
    run_root = root / name
    server = None
    backend_env: dict[str, str] = {}
    try:
        if url is None:
            log_path = log_dir / f"server-{name}.log"
            if door == "front":
                server = FrontDoorServer(run_root, log_path, args.workers, args.threads, args.limit_overrides)
            elif door in TUS_DOORS:
                server = TusServer(run_root, log_path, fsync=door == "tus-fsync")
            else:
                server = Server(run_root, log_path, args.workers, args.threads)
            if door in DOORS and backend != "embedded":
                # A fresh database (and bucket prefix) for this server start.
                backend_env = services.env(backend)
                server.env.update(backend_env)
                n["records"] = backend_env["WITNESS_DATABASE_URL"]
                n["chunk_store"] = backend_env.get("WITNESS_CHUNK_STORE", "local files")
            server.start()
            keys = await server.wait_ready()
            host, port = "127.0.0.1", server.port
            # Every process of the server, once the pools have booted their
            # workers (the front door's sockets open before all have).
            boot_deadline = time.monotonic() + 20
            while len(server.pids()) < server.expected_processes() and time.monotonic() < boot_deadline:
                await asyncio.sleep(0.1)
            n["server_processes"] = len(server.pids())
        else:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port or 80
            conn = Connection(host, port)
            status, body = await asyncio.wait_for(conn.request("GET", "/v1/keys", {}), 10)
            conn.close()
            if status != 200:
                raise RuntimeError(f"GET /v1/keys answered {status}")
            keys = json.loads(body)

        # The physical peer, measured right before and right after the run on
        # the same disk (the machine is shared: its speed drifts).
        peer_dir = (Path(args.peer_dir) if args.peer_dir else run_root) / "peer"
        n["peer_before"] = physical_peer(peer_dir, args.peer_seconds)

        if door in TUS_DOORS:
            phones = [TusPhone(i, host, port, tus_body) for i in range(spec.phones)]
        else:
            phones = [Phone(i, host, port, plaintext) for i in range(spec.phones)]
        t_reg = time.monotonic()
        await register_all(phones, keys, args.register_concurrency, args.timeout,
                           deadline=t_reg + HARD_CAP_SECONDS_PER_RUN / 2)
        n["register_seconds"] = time.monotonic() - t_reg

        loop = asyncio.get_running_loop()
        start = loop.time() + 0.5
        stop = start + spec.seconds
        measure_from = start + spec.warmup
        rng = random.Random(spec.phones)
        if spec.mode == "paced":
            phases = [rng.random() for _ in phones]          # real phones are not in lock-step
        else:
            phases = [i * 0.2 / max(1, spec.phones) for i in range(spec.phones)]

        # CPU accounting over the measured part of the window.
        # The PostgreSQL and SeaweedFS processes are not the server's: measured
        # beside it (for the embedded backend and tus, none).
        watch_services = services is not None and door in DOORS and backend in ("postgresql", "scaleout")

        async def snapshot_at(when: float) -> tuple:
            await asyncio.sleep(max(0.0, when - loop.time()))
            return (loop.time(), time.process_time(), server.cpu_seconds() if server else {}, machine_ticks(),
                    services.cpu_seconds(backend) if watch_services else {})

        snap_begin = asyncio.ensure_future(snapshot_at(measure_from))
        snap_end = asyncio.ensure_future(snapshot_at(stop))
        tasks = [asyncio.ensure_future(p.run(mode=spec.mode, start=start, stop=stop, phase=ph,
                                             timeout=args.timeout)) for p, ph in zip(phones, phases)]
        # Bounded: the window, then at most one request timeout to drain.
        done, pending = await asyncio.wait(tasks, timeout=spec.seconds + 0.5 + args.timeout + 5)
        for task in pending:
            task.cancel()
        n["phones_not_finished"] = len(pending)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        b, e = await snap_begin, await snap_end
        window = e[0] - b[0]
        n["client_cpu_cores"] = (e[1] - b[1]) / window
        if server:
            # A process that started inside the window (none, normally)
            # counts from zero; one that ended inside it is lost (the log
            # scan shows respawns).
            n["server_cpu_cores"] = sum(e[2].get(pid, 0) - b[2].get(pid, 0) for pid in e[2]) / window
            use = {pid: (e[2][pid] - b[2].get(pid, 0)) / window for pid in e[2]}
            roles = server.roles()
            by_role: dict[str, list[float]] = {}
            for pid, cores in use.items():
                by_role.setdefault(roles.get(pid, "gone"), []).append(round(cores, 3))
            n["server_cpu_by_role"] = {role: sorted(v, reverse=True) for role, v in sorted(by_role.items())}
            n["server_cpu_master"] = round(sum(by_role.get("master", [])), 2)
            n["server_cpu_workers"] = sorted((round(v, 2) for pid, v in use.items()
                                              if roles.get(pid) in ("worker", "ingest worker")), reverse=True)
            parts: dict[str, float] = {}
            for role, values in by_role.items():
                part = role.split(" ")[0] if door == "front" else "node" if door in TUS_DOORS else "gunicorn"
                parts[part] = parts.get(part, 0.0) + sum(values)
            n["server_cpu_by_part"] = {k: round(v, 3) for k, v in sorted(parts.items())}
        # Each service's processes over the same window (backends started
        # inside it, a new database connection's, count from zero).
        n["services_cpu_cores"] = {
            svc: sum(cpu - b[4].get(svc, {}).get(pid, 0) for pid, cpu in pids.items()) / window
            for svc, pids in e[4].items()}
        busy = e[3][0] - b[3][0]
        steal = e[3][1] - b[3][1]
        total = e[3][2] - b[3][2]
        n["machine_busy_pct"] = 100 * busy / total if total else float("nan")
        n["machine_steal_pct"] = 100 * steal / total if total else float("nan")
        # Whatever else ran meanwhile (other tenants, kernel threads), in cores.
        busy_cores = (busy / total) * (os.cpu_count() or 1) if total else float("nan")
        n["other_cpu_cores"] = max(0.0, busy_cores - n["client_cpu_cores"] - n.get("server_cpu_cores", 0.0)
                                   - sum(n["services_cpu_cores"].values()))

        samples = [s for p in phones for s in p.samples]
        ok = [s for s in samples if s.acked]
        measured = [s for s in ok if s.sent >= measure_from]
        latencies = [(s.done - s.sent) * 1000 for s in measured]
        acked_in_window = [s for s in ok if measure_from <= s.done <= stop]
        span = stop - measure_from
        n["window_seconds"] = span
        n["offered_per_s"] = spec.phones if spec.mode == "paced" else None
        n["sent_per_s"] = sum(1 for s in samples if measure_from <= s.sent < stop) / span
        n["acked_per_s"] = len(acked_in_window) / span
        n["acked_mb_per_s"] = n["acked_per_s"] * CHUNK_BYTES / 1e6
        n["acked_total"] = len(ok)
        if server and n["acked_per_s"]:
            # Server CPU per acknowledged chunk, both over the measured window.
            n["server_cpu_ms_per_ack"] = 1000 * n["server_cpu_cores"] / n["acked_per_s"]
            n["server_cpu_ms_per_ack_by_part"] = {
                part: round(1000 * cores / n["acked_per_s"], 3) for part, cores in n["server_cpu_by_part"].items()}
            n["services_cpu_ms_per_ack"] = {
                svc: 1000 * cores / n["acked_per_s"] for svc, cores in n["services_cpu_cores"].items()}
            # What a chunk costs this deployment: the server and its services.
            n["total_cpu_ms_per_ack"] = n["server_cpu_ms_per_ack"] + sum(n["services_cpu_ms_per_ack"].values())
        n["duplicates_200"] = sum(1 for s in ok if s.status == 200)
        n["latency_ms"] = {
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99), "max": max(latencies) if latencies else float("nan"),
            "count": len(latencies),
        }
        errors: dict[str, int] = {}
        for s in samples:
            if not s.acked:
                key = {-1: "timeout", 0: "transport"}.get(s.status, str(s.status))
                if s.status > 0 and s.error:
                    key += f" {s.error}"
                errors[key] = errors.get(key, 0) + 1
        n["errors"] = errors
        n["error_count"] = sum(errors.values())
        n["error_examples"] = sorted({s.error for s in samples if not s.acked})[:5]
        n["reconnects"] = sum(p.conn.reconnects for p in phones)
        if spec.mode == "paced":
            lags = [(s.sent - s.scheduled) for s in samples if s.sent >= measure_from]
            n["late_sends"] = sum(1 for s in samples
                                  if s.sent >= measure_from and s.sent - s.scheduled > LATE_THRESHOLD_S)
            n["send_lag_p99_ms"] = percentile(lags, 99) * 1000 if lags else float("nan")
            # Slots due in the window that were never acknowledged: the backlog.
            due_total = sum(math.ceil(spec.seconds - ph) for ph in phases)
            n["backlog_at_end"] = max(0, due_total - sum(p.next_index for p in phones))
        for p in phones:
            p.conn.close()
        n["peer_after"] = physical_peer(peer_dir, args.peer_seconds)
        shutil.rmtree(peer_dir, ignore_errors=True)
        peer_rate = (n["peer_before"]["chunks_per_s"] + n["peer_after"]["chunks_per_s"]) / 2
        n["peer"] = {"chunks_per_s": peer_rate, "mb_per_s": peer_rate * CHUNK_BYTES / 1e6}
        n["ratio_to_peer"] = n["acked_per_s"] / peer_rate if peer_rate else None
        return result
    finally:
        if server is not None:
            stop_offset = server.log_path.stat().st_size if server.log_path.exists() else 0
            server.stop()
            server.cleanup()
            n["server_log"] = str(server.log_path)
            n["server_log_findings"] = scan_log(server.log_path, stop_offset, server.expected_workers())
        if backend_env:
            services.release(backend_env)
        shutil.rmtree(run_root, ignore_errors=True)
        if args.peer_dir:
            shutil.rmtree(Path(args.peer_dir) / "peer", ignore_errors=True)


# --------------------------------------------------------------------------- report


def fmt(value, digits=0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value != value:
        return "—"
    return f"{value:,.{digits}f}"


def ratio(a, b) -> float | None:
    if a is None or b is None or not b or a != a or b != b:
        return None
    return a / b


def per_process(r: RunResult) -> str:
    """The server's CPU by process, in cores: the workers (direct), or
    nginx (master + workers), the ingest workers, the staff pool and the
    launcher (front)."""
    n = r.numbers
    if r.door in TUS_DOORS:
        node = sum((n.get("server_cpu_by_role") or {}).get("node", []))
        return f"node {node:.2f}" if n.get("server_cpu_by_role") else "—"
    if r.door != "front":
        per = n.get("server_cpu_workers")
        return " ".join(map(str, per)) if per else "—"
    roles = n.get("server_cpu_by_role") or {}
    if not roles:
        return "—"
    total = lambda *names: sum(sum(roles.get(name, [])) for name in names)  # noqa: E731
    ingest = " ".join(f"{v:.2f}" for v in roles.get("ingest worker", []))
    return (f"nginx {total('nginx master', 'nginx worker'):.2f} · ingest {ingest} · "
            f"staff {total('staff master', 'staff worker'):.2f} · masters+launcher "
            f"{total('ingest master', 'launcher'):.2f}")


def services_cell(r: RunResult) -> str:
    """PostgreSQL's and SeaweedFS's CPU over the window, in cores."""
    cores = r.numbers.get("services_cpu_cores")
    if not cores:
        return "—"
    return " · ".join(f"{'PG' if svc == 'postgresql' else 'weed'} {v:.2f}" for svc, v in sorted(cores.items()))


def log_summary(findings: dict | None) -> str:
    if findings is None:
        return "—"
    trouble = [f"{k}={findings[k]}" for k in LOG_TROUBLE if findings.get(k)]
    return "clean" if not trouble else ", ".join(trouble)


def comparison(results: list[RunResult]) -> list[str]:
    """The "front door vs direct" table: per spec that ran on both doors."""
    pairs: dict[tuple[str, str], dict[str, RunResult]] = {}
    for r in results:
        if "failure" not in r.numbers:
            pairs.setdefault((r.spec.name, r.backend), {})[r.door] = r
    rows = []
    for (name, backend), doors in pairs.items():
        if "direct" not in doors or "front" not in doors:
            continue
        d, f = doors["direct"].numbers, doors["front"].numbers
        dp99, fp99 = d["latency_ms"]["p99"], f["latency_ms"]["p99"]
        dcpu, fcpu = d.get("server_cpu_ms_per_ack"), f.get("server_cpu_ms_per_ack")
        nginx = (f.get("server_cpu_ms_per_ack_by_part") or {}).get("nginx")
        rows.append(
            f"| {name} | {backend} | {fmt(d['acked_per_s'], 1)} | {fmt(f['acked_per_s'], 1)} "
            f"| {fmt(ratio(f['acked_per_s'], d['acked_per_s']), 2)} "
            f"| {fmt(dp99, 1)} | {fmt(fp99, 1)} | {fmt(ratio(fp99, dp99), 2)} "
            f"| {fmt(dcpu, 2)} | {fmt(fcpu, 2)} | {fmt(ratio(fcpu, dcpu), 2)} | {fmt(nginx, 2)} "
            f"| {fmt(d.get('error_count'))} / {fmt(f.get('error_count'))} "
            f"| {fmt(d.get('other_cpu_cores'), 2)} / {fmt(f.get('other_cpu_cores'), 2)} |")
    if not rows:
        return []
    return ["", "Front door vs direct (same spec, back to back; ratio = front ÷ direct; CPU = every process of "
            "the server over the measured window ÷ chunks acknowledged in it):", "",
            "| run | backend | acked/s direct | acked/s front | ratio front/direct | p99 ms direct | p99 ms front "
            "| p99 ratio | CPU ms/ack direct | CPU ms/ack front | CPU ratio | of which nginx ms/ack "
            "| errors direct / front | other CPU cores direct / front |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|", *rows]


def tus_comparison(results: list[RunResult]) -> list[str]:
    """The "Witness Sync vs tus" table: per spec, every Witness door that ran
    against every tus door that ran."""
    by_spec: dict[str, dict[tuple[str, str], RunResult]] = {}
    for r in results:
        if "failure" not in r.numbers:
            by_spec.setdefault(r.spec.name, {})[(r.door, r.backend)] = r
    rows = []
    for name, runs in by_spec.items():
        witness = [key for key in runs if key[0] in DOORS]
        for wkey in sorted(witness, key=lambda k: (DOORS.index(k[0]), BACKENDS.index(k[1]))):
            for tdoor in TUS_DOORS:
                if (tdoor, "") not in runs:
                    continue
                w, t = runs[wkey].numbers, runs[(tdoor, "")].numbers
                wp99, tp99 = w["latency_ms"]["p99"], t["latency_ms"]["p99"]
                wcpu, tcpu = w.get("server_cpu_ms_per_ack"), t.get("server_cpu_ms_per_ack")
                wall = w.get("total_cpu_ms_per_ack")
                rows.append(
                    f"| {name} | {wkey[0]} | {wkey[1]} | {tdoor} | {fmt(w['acked_per_s'], 1)} "
                    f"| {fmt(t['acked_per_s'], 1)} "
                    f"| {fmt(ratio(w['acked_per_s'], t['acked_per_s']), 2)} "
                    f"| {fmt(wp99, 1)} | {fmt(tp99, 1)} | {fmt(ratio(wp99, tp99), 2)} "
                    f"| {fmt(wcpu, 2)} | {fmt(wall, 2)} | {fmt(tcpu, 2)} | {fmt(ratio(wall, tcpu), 2)} "
                    f"| {fmt(w.get('server_cpu_cores'), 2)} / {fmt(t.get('server_cpu_cores'), 2)} "
                    f"| {fmt(w.get('error_count'))} / {fmt(t.get('error_count'))} |")
    if not rows:
        return []
    return ["", "Witness Sync vs stock tus-node (same spec and load shape, back to back; ratio = Witness ÷ tus; "
            "CPU = every process of the server over the measured window ÷ chunks acknowledged in it, and "
            "for the PostgreSQL and scale-out backends also with their PostgreSQL and SeaweedFS processes "
            "(\"incl. services\"; the CPU ratio uses that); "
            "tus = one Node.js process, tus-fsync = the same with an fsync of the upload file before each 204):",
            "",
            "| run | Witness door | backend | tus door | acked/s Witness | acked/s tus | ratio Witness/tus "
            "| p99 ms Witness | p99 ms tus | p99 ratio | CPU ms/ack Witness server | CPU ms/ack Witness incl. "
            "services | CPU ms/ack tus | CPU ratio | server CPU cores Witness / tus | errors Witness / tus |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|", *rows]


def backend_comparison(results: list[RunResult]) -> list[str]:
    """The "backends" table: every Witness run, with its ratio to the same
    door on the embedded backend, to the tus doors and to the physical peer,
    and its CPU per acknowledged chunk split into the server's, PostgreSQL's
    and SeaweedFS's."""
    by_spec: dict[str, dict[tuple[str, str], RunResult]] = {}
    for r in results:
        if "failure" not in r.numbers:
            by_spec.setdefault(r.spec.name, {})[(r.door, r.backend)] = r
    if not any(key[1] not in ("", "embedded") for runs in by_spec.values() for key in runs):
        return []
    tus_ran = [d for d in TUS_DOORS if any((d, "") in runs for runs in by_spec.values())]
    rows = []
    for name, runs in by_spec.items():
        witness = [key for key in runs if key[0] in DOORS]
        for key in sorted(witness, key=lambda k: (DOORS.index(k[0]), BACKENDS.index(k[1]))):
            n = runs[key].numbers
            base = runs.get((key[0], "embedded"))
            svc = n.get("services_cpu_ms_per_ack") or {}
            cores = n.get("services_cpu_cores") or {}
            vs_tus = " | ".join(
                fmt(ratio(n["acked_per_s"], runs[(d, "")].numbers["acked_per_s"]) if (d, "") in runs else None, 2)
                for d in tus_ran)
            rows.append(
                f"| {name} | {key[0]} | {key[1]} | {fmt(n['acked_per_s'], 1)} "
                f"| {fmt(ratio(n['acked_per_s'], base.numbers['acked_per_s']) if base else None, 2)} "
                + (f"| {vs_tus} " if tus_ran else "")
                + f"| {fmt(n.get('ratio_to_peer'), 2)} | {fmt(n['latency_ms']['p99'], 1)} "
                f"| {fmt(n.get('server_cpu_ms_per_ack'), 2)} | {fmt(svc.get('postgresql'), 2)} "
                f"| {fmt(svc.get('seaweedfs'), 2)} | {fmt(n.get('total_cpu_ms_per_ack'), 2)} "
                f"| {fmt(n.get('server_cpu_cores'), 2)} / {fmt(cores.get('postgresql'), 2)} "
                f"/ {fmt(cores.get('seaweedfs'), 2)} | {fmt(n.get('error_count'))} |")
    tus_heads = "".join(f"| ratio to {d} " for d in tus_ran)
    return ["", "Backends (embedded = SQLite + chunk files; postgresql = records on PostgreSQL, chunks in files; "
            "scaleout = PostgreSQL + S3 on SeaweedFS). CPU ms/ack: the server's processes, then PostgreSQL's "
            "(postmaster and backends) and SeaweedFS's (`weed`) over the same window, each ÷ chunks acknowledged "
            "in it; total = their sum. Ratios are acked/s ÷ the other run's acked/s in the same spec:", "",
            f"| run | door | backend | acked/s | ratio to embedded {tus_heads}| ratio to peer | p99 ms "
            "| CPU ms/ack server | CPU ms/ack PostgreSQL | CPU ms/ack SeaweedFS | CPU ms/ack total "
            "| cores server / PostgreSQL / SeaweedFS | errors |",
            "|---|---|---|---:|---:|" + "---:|" * len(tus_ran) + "---:|---:|---:|---:|---:|---:|---|---:|", *rows]


def markdown(results: list[RunResult], meta: dict) -> str:
    out = []
    out.append(f"Witness Sync ingest benchmark — {meta['when']}, code {meta['code']}  ")
    out.append(f"chunk {CHUNK_BYTES // 1024} KiB ciphertext, window {meta['seconds']} s "
               f"(first {meta['warmup']} s not measured), target {meta['target']}, "
               f"{meta['cpus']} CPUs, load generator and server on the same machine  ")
    out.append(f"load average (1/5/15 min) at start {meta['loadavg_before']}, at end {meta['loadavg_after']}")
    if meta.get("backends") and any(d in DOORS for d in meta.get("doors", [])):
        out.append("Witness backends: " + ", ".join(meta["backends"])
                   + " (embedded = SQLite + chunk files in the data folder; postgresql = records on PostgreSQL, "
                     "chunks in files; scaleout = records on PostgreSQL, chunks on S3); each server start on a "
                     "fresh database / bucket prefix"
                   + (f"; services: {meta['services']}" if meta.get("services") else "") + "  ")
    if meta.get("limit_overrides"):
        out.append("front door limits raised for this many phones from one address: "
                   + ", ".join(f"{k}={v}" for k, v in meta["limit_overrides"].items()))
    if meta.get("tus"):
        out.append(f"tus doors: stock tus-node ({meta['tus']}), ONE Node.js process: Node runs JavaScript on a "
                   "single thread (file system calls on libuv's pool of 4 threads), which is how stock tus-node "
                   "runs, against the Witness doors' ingest pool of "
                   f"{meta['workers']} workers × {meta['threads']} threads. `tus` answers a PATCH's 204 once its "
                   "bytes are written (page cache, no fsync); `tus-fsync` after an fsync of the upload file. "
                   "Bodies: random bytes, 256 KiB like a Witness chunk's ciphertext  ")
        out.append("Registration is outside every door's measured window (Witness: device and recording, "
                   "tus: `POST /files` creating the upload; all before the window starts; column register s)  ")
    if meta.get("external"):
        out.append("(--url: the server's CPU is not measured; 'other CPU' below includes it, and the peer ran on "
                   "this machine's temporary folder, which may not be the server's disk)")
    out.append("")
    out.append("| run | door | backend | mode | phones | offered/s | sent/s | acked chunks/s | acked MB/s | p50 ms "
               "| p95 ms | p99 ms | max ms | late sends | errors | peer chunks/s | ratio to peer |")
    out.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        n, s = r.numbers, r.spec
        lat = n.get("latency_ms", {})
        late = fmt(n.get("late_sends")) if s.mode == "paced" else "n/a"
        out.append(
            f"| {s.name} | {r.door} | {r.backend or '—'} | {s.mode} | {s.phones} | {fmt(n.get('offered_per_s'))} "
            f"| {fmt(n.get('sent_per_s'), 1)} "
            f"| {fmt(n.get('acked_per_s'), 1)} | {fmt(n.get('acked_mb_per_s'), 1)} | {fmt(lat.get('p50'), 1)} "
            f"| {fmt(lat.get('p95'), 1)} | {fmt(lat.get('p99'), 1)} | {fmt(lat.get('max'), 1)} | {late} "
            f"| {fmt(n.get('error_count'))} | {fmt(n.get('peer', {}).get('chunks_per_s'))} "
            f"| {fmt(n.get('ratio_to_peer'), 2)} |")
    out.append("")
    out.append("| run | door | backend | server CPU (cores) | CPU ms/ack | per process (cores) "
               "| PostgreSQL / SeaweedFS CPU (cores) | CPU ms/ack incl. services | client CPU (cores) "
               "| other CPU (cores) | machine busy % | steal % "
               "| send lag p99 ms | backlog at end | register s | reconnects | server log |")
    out.append("|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        n, s = r.numbers, r.spec
        out.append(
            f"| {s.name} | {r.door} | {r.backend or '—'} | {fmt(n.get('server_cpu_cores'), 2)} "
            f"| {fmt(n.get('server_cpu_ms_per_ack'), 2)} | {per_process(r)} | {services_cell(r)} "
            f"| {fmt(n.get('total_cpu_ms_per_ack'), 2) if n.get('services_cpu_cores') else '—'} "
            f"| {fmt(n.get('client_cpu_cores'), 2)} | {fmt(n.get('other_cpu_cores'), 2)} "
            f"| {fmt(n.get('machine_busy_pct'))} | {fmt(n.get('machine_steal_pct'), 1)} "
            f"| {fmt(n.get('send_lag_p99_ms'), 1) if s.mode == 'paced' else 'n/a'} "
            f"| {fmt(n.get('backlog_at_end')) if s.mode == 'paced' else 'n/a'} "
            f"| {fmt(n.get('register_seconds'), 1)} | {fmt(n.get('reconnects'))} "
            f"| {log_summary(n.get('server_log_findings'))} |")
    out.extend(comparison(results))
    out.extend(tus_comparison(results))
    out.extend(backend_comparison(results))
    errors = [(f"{r.spec.name} {r.label}", r.numbers.get("errors")) for r in results if r.numbers.get("errors")]
    failures = [(f"{r.spec.name} {r.label}", r.numbers.get("failure")) for r in results if r.numbers.get("failure")]
    if errors or failures:
        out.append("")
        out.append("Errors:")
        for name, e in errors:
            out.append(f"- {name}: " + ", ".join(f"{k} ×{v}" for k, v in sorted(e.items())))
        for name, msg in failures:
            out.append(f"- {name}: run failed: {msg}")
    statuses = [(f"{r.spec.name} {r.label}", r.numbers["server_log_findings"]["statuses"]) for r in results
                if r.numbers.get("server_log_findings", {}).get("statuses")]
    if statuses:
        out.append("")
        out.append("Answers in the server's access log (nginx's, for the front door; tus: error answers only), "
                   "by status: "
                   + "; ".join(f"{name}: " + ", ".join(f"{k} ×{v:,}" for k, v in sorted(st.items()))
                               for name, st in statuses))
    findings = [(f"{r.spec.name} {r.label}", r.numbers["server_log_findings"]) for r in results
                if r.numbers.get("server_log_findings", {}).get("samples")]
    if findings:
        out.append("")
        out.append("Server log lines worth reading:")
        for name, f in findings:
            for line in f["samples"]:
                out.append(f"- {name}: `{line}`")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def loopback_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme != "http" or not parts.hostname:
        raise argparse.ArgumentTypeError("--url must be http://HOST:PORT")
    host = parts.hostname
    try:
        is_loop = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loop = host == "localhost"
    if not is_loop:
        raise argparse.ArgumentTypeError("--url must point at this machine (127.0.0.1, ::1 or localhost)")
    return text.rstrip("/")


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text.strip() else []


def door_list(text: str) -> list[str]:
    """`--door`: one door or a comma list of them, in order; `both` stands for
    direct,front (as it always has)."""
    doors: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        names = list(DOORS) if word == "both" else [word]
        for name in names:
            if name not in ALL_DOORS:
                raise argparse.ArgumentTypeError(
                    f"unknown door {name!r}: choose from {', '.join(ALL_DOORS)}, both, or a comma list")
            if name not in doors:
                doors.append(name)
    if not doors:
        raise argparse.ArgumentTypeError("--door needs at least one door")
    return doors


def backend_list(text: str) -> list[str]:
    """`--backend`: one backend or a comma list of them, in order."""
    backends: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        if word not in BACKENDS:
            raise argparse.ArgumentTypeError(f"unknown backend {word!r}: choose from {', '.join(BACKENDS)}, "
                                             "or a comma list")
        if word not in backends:
            backends.append(word)
    if not backends:
        raise argparse.ArgumentTypeError("--backend needs at least one backend")
    return backends


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Chunk-ingest benchmark for Witness Sync (see module docstring).")
    p.add_argument("--paced", type=int_list, default=[50, 200, 500],
                   help="phone counts for paced runs, one chunk per phone per second (default 50,200,500)")
    p.add_argument("--saturation", type=int_list, default=[16, 64],
                   help="phone counts for closed-loop saturation runs (default 16,64)")
    p.add_argument("--seconds", type=float, default=25.0, help="length of each run's send window (default 25)")
    p.add_argument("--warmup", type=float, default=3.0, help="first seconds of each window not measured (default 3)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    p.add_argument("--peer-seconds", type=float, default=3.0, help="length of each physical-peer measurement")
    p.add_argument("--peer-dir", help="where the physical peer writes (default: next to the server's data)")
    p.add_argument("--url", type=loopback_url, help="benchmark this running server instead of starting one")
    p.add_argument("--door", type=door_list,
                   help="which server to start per run spec: direct = `gunicorn wsgi:app`, front = "
                        "`witness-serve` (nginx + pools), tus = stock tus-node (@tus/server + @tus/file-store, "
                        "one Node process), tus-fsync = the same with an fsync before every PATCH's 204; "
                        "both = direct,front (default); a comma list (e.g. front,tus,tus-fsync) runs each spec "
                        "on each door back to back, the order alternating from spec to spec")
    p.add_argument("--backend", type=backend_list,
                   help="where the Witness doors keep records and chunks: embedded = SQLite + chunk files "
                        "(default), postgresql = records on a throwaway PostgreSQL cluster, chunks in files, "
                        "scaleout = PostgreSQL + S3 on a throwaway SeaweedFS; a comma list runs each Witness "
                        "door on each backend, back to back with the other doors (tus doors run once per spec); "
                        "the services start once per benchmark, each server start gets a fresh database and "
                        "bucket prefix")
    p.add_argument("--workers", type=int, help="WITNESS_WORKERS for the started server, the front door's ingest "
                   "pool likewise (default: gunicorn.conf.py's, min(4, CPUs + 1))")
    p.add_argument("--threads", type=int, help="WITNESS_THREADS likewise (default: gunicorn.conf.py's, 8)")
    p.add_argument("--register-concurrency", type=int, default=16)
    p.add_argument("--json", dest="json_path", help="also write every number to this JSON file")
    p.add_argument("--log-dir", help="keep server logs here (default: a new folder under /tmp)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 10 paced phones, 4 saturating, 5 s each (on every --door)")
    p.add_argument("--max-total", type=float, default=900.0, help="hard cap on the whole benchmark, seconds")
    args = p.parse_args(argv)
    if args.url and args.door:
        p.error("--door starts servers; --url benchmarks one already running: give one or the other")
    if args.url and args.backend:
        p.error("--backend chooses what the started servers use; --url benchmarks one already running")
    args.doors = ["url"] if args.url else (args.door or list(DOORS))
    args.backends = args.backend or ["embedded"]
    if not any(d in DOORS for d in args.doors):
        args.backends = ["embedded"]      # only tus doors: no Witness server to point anywhere
    # Both doors get the same ingest pool: the values gunicorn.conf.py would
    # pick (server/frontdoor.py picks the same), set explicitly for both.
    args.workers = args.workers or min(4, (os.cpu_count() or 1) + 1)
    args.threads = args.threads or 8
    if args.quick:
        args.paced, args.saturation = [10], [4]
        args.seconds, args.warmup, args.peer_seconds, args.timeout = 5.0, 1.0, 1.0, 10.0
    args.seconds = min(args.seconds, HARD_CAP_SECONDS_PER_RUN / 2)
    args.timeout = min(args.timeout, 60.0)
    if args.warmup >= args.seconds:
        p.error("--warmup must be shorter than --seconds")
    # More phones than nginx lets register (or create recordings, or connect)
    # from one address: raise just that burst, in the bench's environment only.
    most = max([*args.paced, *args.saturation, 0])
    args.limit_overrides = {}
    if "front" in args.doors:
        for name, default in FRONT_DOOR_BURSTS.items():
            current = int(os.environ.get(name) or default)
            if most > current:
                args.limit_overrides[name] = str(most)
    return args


async def run_all(specs: list[RunSpec], configurations: list[tuple[str, str]], args, root: Path,
                  log_dir: Path, plaintext: bytes, tus_body: bytes, services: Services,
                  results: list[RunResult], hard_deadline: float) -> None:
    for number, spec in enumerate(specs):
        # Every door (and backend) of a spec back to back, the order
        # alternating from spec to spec, so that a drifting machine does not
        # favour one of them.
        order = configurations if number % 2 == 0 else list(reversed(configurations))
        for door, backend in order:
            label = f"{door}/{backend}" if backend else door
            remaining = hard_deadline - time.monotonic()
            if remaining < spec.seconds + 10:
                print(f"# skipped {spec.name} {label}: --max-total reached", file=sys.stderr)
                continue
            print(f"# {spec.name} {label}: {spec.phones} phones, {spec.mode}, {spec.seconds:g} s ...",
                  file=sys.stderr, flush=True)
            try:
                result = await asyncio.wait_for(
                    run_one(spec, door=door, backend=backend, url=args.url, args=args, root=root,
                            log_dir=log_dir, plaintext=plaintext, tus_body=tus_body, services=services),
                    timeout=min(remaining, HARD_CAP_SECONDS_PER_RUN))
            except Exception as exc:  # report and go on with the next run
                result = RunResult(spec, {"failure": f"{type(exc).__name__}: {exc}"}, door=door, backend=backend)
            results.append(result)
            n = result.numbers
            if "failure" in n:
                print(f"#   failed: {n['failure']}", file=sys.stderr, flush=True)
            else:
                cpu = n.get("server_cpu_ms_per_ack")
                total = n.get("total_cpu_ms_per_ack") if n.get("services_cpu_cores") else None
                print(f"#   acked {n['acked_per_s']:.1f}/s p99 {n['latency_ms']['p99']:.1f} ms errors {n['error_count']}"
                      + (f" server CPU {cpu:.2f} ms/ack" if cpu else "")
                      + (f" ({total:.2f} with PostgreSQL/SeaweedFS)" if total else ""), file=sys.stderr, flush=True)


async def main_async(args) -> int:
    specs = [RunSpec(f"paced-{n}", "paced", n, args.seconds, args.warmup) for n in args.paced]
    specs += [RunSpec(f"sat-{n}", "saturation", n, args.seconds, args.warmup) for n in args.saturation]
    # The tus peer's packages (npm ci) before anything is started or timed.
    versions = ensure_tus_installed() if any(d in TUS_DOORS for d in args.doors) else {}
    root = Path(tempfile.mkdtemp(prefix="witness-bench-"))
    log_dir = Path(args.log_dir) if args.log_dir else root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    plaintext = os.urandom(CHUNK_BYTES - TAG_BYTES)   # ciphertext = exactly 256 KiB
    tus_body = os.urandom(CHUNK_BYTES)                # what tus phones PATCH: the same length
    results: list[RunResult] = []
    version_before = code_version()
    hard_deadline = time.monotonic() + args.max_total
    loadavg_before = load_average()
    # Every Witness door on every backend; tus doors once (they have none).
    configurations = [(door, backend if door in DOORS else "")
                      for door in args.doors
                      for backend in (args.backends if door in DOORS else [""])]
    # PostgreSQL and SeaweedFS, once for the whole benchmark, before any run
    # is timed; stopped whatever happens (error, Ctrl-C, SIGTERM).
    services = Services([] if args.url else args.backends, root, log_dir)
    try:
        if services.needed:
            services.start()
        services_text = services.describe()
        await run_all(specs, configurations, args, root, log_dir, plaintext, tus_body, services, results,
                      hard_deadline)
    finally:
        services.stop()
    pool = f"WITNESS_WORKERS={args.workers}, WITNESS_THREADS={args.threads}"
    targets = {
        "direct": f"`gunicorn wsgi:app` (gunicorn.conf.py, {pool})",
        "front": f"`witness-serve` (nginx + ingest pool {pool} + staff pool "
                 f"{os.environ.get('WITNESS_STAFF_WORKERS') or 2}×{os.environ.get('WITNESS_STAFF_THREADS') or 4})",
        "tus": "`node bench/peers/tus_server.mjs` (stock tus-node, one process)",
        "tus-fsync": "`node bench/peers/tus_server.mjs --fsync` (the same, fsync before every PATCH's 204)",
    }
    meta = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": args.seconds, "warmup": args.warmup,
        "target": args.url or "a fresh server per run: " + " and ".join(targets[d] for d in args.doors)
                  + (", each spec on every door back to back, order alternating" if len(args.doors) > 1 else ""),
        "cpus": os.cpu_count(),
        "external": bool(args.url),
        "doors": args.doors,
        "backends": args.backends if not args.url else [],
        "services": services_text,
        "loadavg_before": loadavg_before, "loadavg_after": load_average(),
        "limit_overrides": args.limit_overrides,
        "tus": " + ".join(f"{k} {v}" for k, v in versions.items()),
        "workers": args.workers, "threads": args.threads,
        "code": version_before[0] if code_version()[1] == version_before[1]
        else f"{version_before[0]} then {code_version()[0]} (server code changed during the benchmark)",
    }
    print(markdown(results, meta))
    if not args.url:
        print(f"\nServer logs: {log_dir}", file=sys.stderr)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {"meta": meta, "runs": [{"spec": r.spec.__dict__, "door": r.door, "backend": r.backend, **r.numbers}
                              for r in results]},
            indent=2, default=str))
    # Data folders are removed per run; only the logs stay.
    for child in root.iterdir():
        if child != log_dir:
            shutil.rmtree(child, ignore_errors=True)
    if log_dir.is_dir() and not any(log_dir.iterdir()):
        log_dir.rmdir()
    if not any(root.iterdir()):
        root.rmdir()
    return 1 if any("failure" in r.numbers for r in results) else 0


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def code_version() -> tuple[str, str]:
    """(short HEAD, fingerprint of the server code: the committed trees of
    sync/, server/, crypto/, deploy/ and the entry points, plus any uncommitted change
    to them). "+dirty" marks uncommitted server code."""
    paths = ["sync", "server", "crypto", "deploy", "wsgi.py", "gunicorn.conf.py"]

    def git(*argv):
        return subprocess.run(["git", *argv], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD") or "unknown"
        trees = git("rev-parse", *[f"HEAD:{p}" for p in paths])
        dirty = git("diff", "HEAD", "--", *paths)
    except (OSError, subprocess.SubprocessError):
        return "unknown", ""
    return head + ("+dirty" if dirty else ""), trees + hashlib.sha256(dirty.encode()).hexdigest()


def main(argv=None) -> int:
    args = parse_args(argv)

    # SIGTERM as Ctrl-C: the runs' `finally` stop their server and main_async's
    # stops PostgreSQL and SeaweedFS before the bench exits.
    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("# interrupted: servers and services stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
