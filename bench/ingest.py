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

By default a fresh `gunicorn wsgi:app` (gunicorn.conf.py, fresh temporary
data and keys folders) is started for every run and stopped after it; `--url`
targets a server that is already running instead (loopback only).

Nothing here asserts on timings; it measures and prints a markdown table.

    .venv/bin/python bench/ingest.py            # full run, a few minutes
    .venv/bin/python bench/ingest.py --quick    # smoke run, < 30 s
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


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is `parent`, read from /proc (gunicorn's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry))
    return found


# --------------------------------------------------------------------------- HTTP

class HttpError(Exception):
    """Transport failure (connection refused/reset/closed, malformed answer)."""


class Connection:
    """One keep-alive HTTP/1.1 connection, minimal and cheap: the load
    generator shares two cores with the server, so no requests/urllib3."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = False
        self.reconnects = 0

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
            return await self._read_rest(status_line)
        raise HttpError("unreachable")

    async def _read_rest(self, status_line: bytes) -> tuple[int, bytes]:
        try:
            parts = status_line.split(None, 2)
            status = int(parts[1])
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, OSError) as exc:
            self.close()
            raise HttpError(f"bad answer: {exc!r}") from None
        length, close = 0, False
        for line in raw.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                self.close()
                raise HttpError("chunked answers are not expected from this server")
        try:
            payload = await self.reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            self.close()
            raise HttpError(f"answer cut short: {exc!r}") from None
        self.used = True
        if close:
            self.close()
        return status, payload


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


class Phone:
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
            self.samples.append(Sample(index, due, sent, done, status, error))
            if status in (200, 201):
                index += 1
                body, headers = self.build_chunk(index)  # off the measured path
                due = start + phase + index if mode == "paced" else loop.time()
            else:
                due = max(due, loop.time() + RETRY_PAUSE_S)
        self.next_index = index


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
    127.0.0.1 with fresh data and keys folders."""

    def __init__(self, root: Path, log_path: Path, workers: int | None, threads: int | None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "WITNESS_BIND": f"127.0.0.1:{self.port}",
            "WITNESS_DATA_DIR": str(root / "data"),
            "WITNESS_KEYS_DIR": str(root / "keys"),
            # Finalization is not what this measures: keep it out of the window.
            "WITNESS_IDLE_FINALIZE_SECONDS": "3600",
        }
        if workers:
            self.env["WITNESS_WORKERS"] = str(workers)
        if threads:
            self.env["WITNESS_THREADS"] = str(threads)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [server_python(), "-m", "gunicorn", "wsgi:app"], cwd=PROJECT_ROOT, env=self.env,
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
        """The master and its workers."""
        if self.process is None:
            return []
        return [self.process.pid, *child_pids(self.process.pid)]

    def cpu_seconds(self) -> dict[int, float]:
        out = {}
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        return out

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def scan_log(path: Path, stop_offset: int, workers: int) -> dict:
    """Count the server-log lines that mean trouble. Lines before
    `stop_offset` were written while the benchmark ran; after it, during the
    graceful stop (where "Worker exiting" is normal and not counted)."""
    counts = {"error_lines": 0, "tracebacks": 0, "worker_timeouts": 0, "worker_kills": 0,
              "worker_respawns": 0, "shutdown_problems": 0}
    samples: list[str] = []
    if not path.exists():
        return {**counts, "samples": samples}
    raw = path.read_bytes()
    boots = 0
    for part, text in (("run", raw[:stop_offset]), ("stop", raw[stop_offset:])):
        for line in text.decode("utf-8", "replace").splitlines():
            kinds = []
            if "Traceback (most recent call last)" in line:
                kinds.append("tracebacks")
            if "WORKER TIMEOUT" in line:
                kinds.append("worker_timeouts")
            if "was sent SIG" in line or "exited with code" in line:
                kinds.append("worker_kills")
            if " ERROR " in line or "[ERROR]" in line or "[CRITICAL]" in line or " CRITICAL " in line:
                kinds.append("error_lines")
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
    return {**counts, "samples": samples}


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

    await asyncio.gather(*(one(p) for p in phones))


async def run_one(spec: RunSpec, *, url: str | None, args, root: Path, log_dir: Path,
                  plaintext: bytes) -> RunResult:
    result = RunResult(spec)
    n = result.numbers
    run_root = root / spec.name
    server = None
    try:
        if url is None:
            server = Server(run_root, log_dir / f"server-{spec.name}.log", args.workers, args.threads)
            server.start()
            keys = await server.wait_ready()
            host, port = "127.0.0.1", server.port
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
        async def snapshot_at(when: float) -> tuple:
            await asyncio.sleep(max(0.0, when - loop.time()))
            return (loop.time(), time.process_time(), server.cpu_seconds() if server else {}, machine_ticks())

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
            n["server_cpu_cores"] = sum(e[2].get(pid, 0) - b[2].get(pid, 0) for pid in e[2]) / window
            master = server.process.pid
            use = {pid: (e[2][pid] - b[2].get(pid, 0)) / window for pid in e[2]}
            n["server_cpu_master"] = round(use.get(master, 0.0), 2)
            n["server_cpu_workers"] = sorted((round(v, 2) for pid, v in use.items() if pid != master), reverse=True)
        busy = e[3][0] - b[3][0]
        steal = e[3][1] - b[3][1]
        total = e[3][2] - b[3][2]
        n["machine_busy_pct"] = 100 * busy / total if total else float("nan")
        n["machine_steal_pct"] = 100 * steal / total if total else float("nan")
        # Whatever else ran meanwhile (other tenants, kernel threads), in cores.
        busy_cores = (busy / total) * (os.cpu_count() or 1) if total else float("nan")
        n["other_cpu_cores"] = max(0.0, busy_cores - n["client_cpu_cores"] - n.get("server_cpu_cores", 0.0))

        samples = [s for p in phones for s in p.samples]
        ok = [s for s in samples if s.status in (200, 201)]
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
        n["duplicates_200"] = sum(1 for s in ok if s.status == 200)
        n["latency_ms"] = {
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99), "max": max(latencies) if latencies else float("nan"),
            "count": len(latencies),
        }
        errors: dict[str, int] = {}
        for s in samples:
            if s.status not in (200, 201):
                key = {-1: "timeout", 0: "transport"}.get(s.status, str(s.status))
                if s.status > 0 and s.error:
                    key += f" {s.error}"
                errors[key] = errors.get(key, 0) + 1
        n["errors"] = errors
        n["error_count"] = sum(errors.values())
        n["error_examples"] = sorted({s.error for s in samples if s.status not in (200, 201)})[:5]
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
            workers = max(1, len(server.pids()) - 1)
            server.stop()
            n["server_log"] = str(server.log_path)
            n["server_log_findings"] = scan_log(server.log_path, stop_offset, workers)
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


def markdown(results: list[RunResult], meta: dict) -> str:
    out = []
    out.append(f"Witness Sync ingest benchmark — {meta['when']}, code {meta['code']}  ")
    out.append(f"chunk {CHUNK_BYTES // 1024} KiB ciphertext, window {meta['seconds']} s "
               f"(first {meta['warmup']} s not measured), target {meta['target']}, "
               f"{meta['cpus']} CPUs, load generator and server on the same machine")
    if meta.get("external"):
        out.append("(--url: the server's CPU is not measured; 'other CPU' below includes it, and the peer ran on "
                   "this machine's temporary folder, which may not be the server's disk)")
    out.append("")
    out.append("| run | mode | phones | offered/s | sent/s | acked chunks/s | acked MB/s | p50 ms | p95 ms | p99 ms "
               "| max ms | late sends | errors | peer chunks/s | ratio to peer |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        n, s = r.numbers, r.spec
        lat = n.get("latency_ms", {})
        late = fmt(n.get("late_sends")) if s.mode == "paced" else "n/a"
        out.append(
            f"| {s.name} | {s.mode} | {s.phones} | {fmt(n.get('offered_per_s'))} | {fmt(n.get('sent_per_s'), 1)} "
            f"| {fmt(n.get('acked_per_s'), 1)} | {fmt(n.get('acked_mb_per_s'), 1)} | {fmt(lat.get('p50'), 1)} "
            f"| {fmt(lat.get('p95'), 1)} | {fmt(lat.get('p99'), 1)} | {fmt(lat.get('max'), 1)} | {late} "
            f"| {fmt(n.get('error_count'))} | {fmt(n.get('peer', {}).get('chunks_per_s'))} "
            f"| {fmt(n.get('ratio_to_peer'), 2)} |")
    out.append("")
    out.append("| run | server CPU (cores) | per worker | client CPU (cores) | other CPU (cores) | machine busy % | steal % "
               "| send lag p99 ms | backlog at end | register s | reconnects | server log |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        n, s = r.numbers, r.spec
        f = n.get("server_log_findings")
        kinds = ("error_lines", "tracebacks", "worker_timeouts", "worker_kills", "worker_respawns", "shutdown_problems")
        log = ("—" if f is None else
               ("clean" if not any(f[k] for k in kinds) else ", ".join(f"{k}={f[k]}" for k in kinds if f[k])))
        per = n.get("server_cpu_workers")
        out.append(
            f"| {s.name} | {fmt(n.get('server_cpu_cores'), 2)} | {' '.join(map(str, per)) if per else '—'} "
            f"| {fmt(n.get('client_cpu_cores'), 2)} | {fmt(n.get('other_cpu_cores'), 2)} | {fmt(n.get('machine_busy_pct'))} | {fmt(n.get('machine_steal_pct'), 1)} "
            f"| {fmt(n.get('send_lag_p99_ms'), 1) if s.mode == 'paced' else 'n/a'} "
            f"| {fmt(n.get('backlog_at_end')) if s.mode == 'paced' else 'n/a'} "
            f"| {fmt(n.get('register_seconds'), 1)} | {fmt(n.get('reconnects'))} | {log} |")
    errors = [(r.spec.name, r.numbers.get("errors")) for r in results if r.numbers.get("errors")]
    failures = [(r.spec.name, r.numbers.get("failure")) for r in results if r.numbers.get("failure")]
    if errors or failures:
        out.append("")
        out.append("Errors:")
        for name, e in errors:
            out.append(f"- {name}: " + ", ".join(f"{k} ×{v}" for k, v in sorted(e.items())))
        for name, msg in failures:
            out.append(f"- {name}: run failed: {msg}")
    findings = [(r.spec.name, r.numbers["server_log_findings"]) for r in results
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
    p.add_argument("--workers", type=int, help="WITNESS_WORKERS for the started server (default: gunicorn.conf.py)")
    p.add_argument("--threads", type=int, help="WITNESS_THREADS for the started server (default: gunicorn.conf.py)")
    p.add_argument("--register-concurrency", type=int, default=16)
    p.add_argument("--json", dest="json_path", help="also write every number to this JSON file")
    p.add_argument("--log-dir", help="keep server logs here (default: a new folder under /tmp)")
    p.add_argument("--quick", action="store_true", help="smoke run: 10 paced phones, 4 saturating, 5 s each")
    p.add_argument("--max-total", type=float, default=900.0, help="hard cap on the whole benchmark, seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.paced, args.saturation = [10], [4]
        args.seconds, args.warmup, args.peer_seconds, args.timeout = 5.0, 1.0, 1.0, 10.0
    args.seconds = min(args.seconds, HARD_CAP_SECONDS_PER_RUN / 2)
    args.timeout = min(args.timeout, 60.0)
    if args.warmup >= args.seconds:
        p.error("--warmup must be shorter than --seconds")
    return args


async def main_async(args) -> int:
    specs = [RunSpec(f"paced-{n}", "paced", n, args.seconds, args.warmup) for n in args.paced]
    specs += [RunSpec(f"sat-{n}", "saturation", n, args.seconds, args.warmup) for n in args.saturation]
    root = Path(tempfile.mkdtemp(prefix="witness-bench-"))
    log_dir = Path(args.log_dir) if args.log_dir else root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    plaintext = os.urandom(CHUNK_BYTES - TAG_BYTES)   # ciphertext = exactly 256 KiB
    results: list[RunResult] = []
    version_before = code_version()
    hard_deadline = time.monotonic() + args.max_total
    for spec in specs:
        remaining = hard_deadline - time.monotonic()
        if remaining < spec.seconds + 10:
            print(f"# skipped {spec.name}: --max-total reached", file=sys.stderr)
            continue
        print(f"# {spec.name}: {spec.phones} phones, {spec.mode}, {spec.seconds:g} s ...", file=sys.stderr, flush=True)
        try:
            result = await asyncio.wait_for(
                run_one(spec, url=args.url, args=args, root=root, log_dir=log_dir, plaintext=plaintext),
                timeout=min(remaining, HARD_CAP_SECONDS_PER_RUN))
        except Exception as exc:  # report and go on with the next run
            result = RunResult(spec, {"failure": f"{type(exc).__name__}: {exc}"})
        results.append(result)
        n = result.numbers
        if "failure" in n:
            print(f"#   failed: {n['failure']}", file=sys.stderr, flush=True)
        else:
            print(f"#   acked {n['acked_per_s']:.1f}/s p99 {n['latency_ms']['p99']:.1f} ms errors {n['error_count']}",
                  file=sys.stderr, flush=True)
    meta = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": args.seconds, "warmup": args.warmup,
        "target": args.url or "fresh `gunicorn wsgi:app` per run (gunicorn.conf.py"
                  + (f", WITNESS_WORKERS={args.workers}" if args.workers else "")
                  + (f", WITNESS_THREADS={args.threads}" if args.threads else "") + ")",
        "cpus": os.cpu_count(),
        "external": bool(args.url),
        "code": version_before[0] if code_version()[1] == version_before[1]
        else f"{version_before[0]} then {code_version()[0]} (server code changed during the benchmark)",
    }
    print(markdown(results, meta))
    if not args.url:
        print(f"\nServer logs: {log_dir}", file=sys.stderr)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {"meta": meta, "runs": [{"spec": r.spec.__dict__, **r.numbers} for r in results]}, indent=2, default=str))
    # Data folders are removed per run; only the logs stay.
    for child in root.iterdir():
        if child != log_dir:
            shutil.rmtree(child, ignore_errors=True)
    if log_dir.is_dir() and not any(log_dir.iterdir()):
        log_dir.rmdir()
    if not any(root.iterdir()):
        root.rmdir()
    return 1 if any("failure" in r.numbers for r in results) else 0


def code_version() -> tuple[str, str]:
    """(short HEAD, fingerprint of the server code: the committed trees of
    sync/, server/, crypto/ and the entry points, plus any uncommitted change
    to them). "+dirty" marks uncommitted server code."""
    paths = ["sync", "server", "crypto", "wsgi.py", "gunicorn.conf.py"]

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
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
