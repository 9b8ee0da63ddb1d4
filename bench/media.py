#!/usr/bin/env python3
"""Media benchmark: does streaming 1 GiB of decrypted footage keep the
worker's memory flat, and how fast is it next to `flask.send_file`?

Issue 3 item 6. One recording of 1 GiB (1,024 chunks of 1 MiB plaintext,
real AES-256-GCM per PROTOCOL.md) is uploaded through the public protocol to
a fresh `gunicorn wsgi:app` (gunicorn.conf.py, ONE worker, the usual
threads), which is then restarted so that the measured worker carries
nothing from the upload. Next to it, in the same run, `bench/sendfile_app.py`
serves the same plaintext bytes from one file with
`flask.send_file(..., conditional=True)`, under the same gunicorn settings.

Both servers go through the same phases, with the same requests:

* whole      - one whole download, SHA-256 of the body against the plaintext's;
* ranges     - a browser-like session: open-ended `bytes=N-` requests
               abandoned after a few MiB (a <video> seeking), bounded random
               `bytes=a-b` ranges and suffix ranges `bytes=-N`, every byte
               compared with the plaintext file;
* parallel   - several whole downloads at once, each SHA-256-checked;
* throughput - repeated whole downloads, the two servers interleaved
               (ABBA), bodies drained without hashing so the client costs
               little; spot checks of 4 KiB at random places.

Then, for the witness server only (send_file has no equivalent), the copy
bundle of the whole recording (docs/copies.md): `witness finalize-due` makes
its first manifest in a process of its own, a lawyer and a custodian made
with the CLI ask and approve, the worker's scheduler builds the zip (peak
RSS, build time from the server's clock, MB/s of footage against the
reference), the lawyer downloads it (peak RSS; SHA-256 against the
request's `bundle.sha256`), and `python -m sync.evidence.verify` checks it in a
process of its own (its peak RSS from GNU time's %M, its time, its exit
code).

Around every phase the worker's peak RSS is reset (`/proc/PID/clear_refs`)
and read back (VmHWM), and VmRSS is sampled every 10 ms. A physical
reference, AES-256-GCM decrypt + SHA-256 of 1 MiB chunks on one core in this
process, is measured before and after.

The plaintext lives on disk next to the server's data (streamed, never whole
in memory), and so do the bundle and its downloaded copy: four times the
footage size at most. Everything made here is deleted afterwards; the server
logs and witness-verify's output stay.
Nothing asserts on timings; it measures and prints markdown tables.

    .venv/bin/python bench/media.py                  # the full run, about 2-3 minutes
    .venv/bin/python bench/media.py --at-commit HEAD # the same, serving HEAD's tree, not the working tree
    .venv/bin/python bench/media.py --quick          # smoke run, 128 MiB, about 15 s
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import runpy
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import base64  # noqa: E402

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

from crypto.aead import decrypt_chunk, encrypt_chunk, new_content_key, seal_content_key  # noqa: E402
from ingest import (  # noqa: E402  (bench/ is on sys.path: this script's folder)
    b64url,
    code_version,
    content_digest,
    descendants,
    free_port,
    machine_ticks,
    rfc3339,
    scan_log,
    server_python,
)

MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
RECV_BUFFER = MIB                 # the client reads bodies into one reusable buffer
SAMPLE_INTERVAL_S = 0.01          # VmRSS sampling period
SPOT_BYTES = 4096                 # size of one spot check in drained downloads
SPOTS_PER_DOWNLOAD = 16
STAFF_USER, STAFF_PASSWORD = "bench-observer", "bench-observer-correct-horse-battery"
LAWYER_USER, LAWYER_PASSWORD = "bench-lawyer", "bench-lawyer-correct-horse-battery"
CUSTODIAN_USER, CUSTODIAN_PASSWORD = "bench-custodian", "bench-custodian-correct-horse-battery"
POLL_INTERVAL_S = 0.1             # how often the lawyer asks whether the bundle is ready


# --------------------------------------------------------------------------- HTTP


class HttpError(Exception):
    """Transport failure or malformed answer."""


@dataclass
class Answer:
    status: int
    headers: dict
    length: int          # Content-Length
    received: int        # body bytes read
    ttfb: float          # request start -> first answer byte, seconds
    seconds: float       # request start -> last body byte read (or abandon)
    abandoned: bool
    body: bytes = b""    # only with keep_body


class HttpClient:
    """One keep-alive HTTP/1.1 connection on blocking sockets. Bodies are read
    with recv_into into one reusable 1 MiB buffer and handed to a `sink`, so
    a 1 GiB answer costs the client one buffer. `limit` reads only that many
    body bytes and then closes the connection, as a browser abandoning a
    request does."""

    def __init__(self, port: int, timeout: float):
        self.port, self.timeout = port, timeout
        self.sock: socket.socket | None = None
        self.used = False
        self.connections = 0
        self.buffer = bytearray(RECV_BUFFER)
        self.view = memoryview(self.buffer)

    def _connect(self) -> None:
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.used = False
        self.connections += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes = b"", *,
                sink=None, limit: int | None = None, keep_body: bool = False) -> Answer:
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw_head = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            reused = self.used
            start = time.perf_counter()
            try:
                self.sock.sendall(raw_head)
                if body:
                    self.sock.sendall(body)
                first = self.sock.recv(65536)
            except OSError as exc:
                self.close()
                if reused and attempt == 0 and not isinstance(exc, TimeoutError):
                    continue  # the server closed the idle connection: send once more
                raise HttpError(f"send failed: {exc!r}") from None
            if not first:
                self.close()
                if reused and attempt == 0:
                    continue
                raise HttpError("connection closed before an answer")
            try:
                return self._read_answer(first, start, sink, limit, keep_body)
            except OSError as exc:
                self.close()
                raise HttpError(f"answer failed: {exc!r}") from None
        raise HttpError("unreachable")

    def _read_answer(self, first: bytes, start: float, sink, limit, keep_body) -> Answer:
        ttfb = time.perf_counter() - start
        data = bytearray(first)
        while b"\r\n\r\n" not in data:
            if len(data) > 65536:
                self.close()
                raise HttpError("answer head too long")
            more = self.sock.recv(65536)
            if not more:
                self.close()
                raise HttpError("connection closed inside the answer head")
            data += more
        end_of_head = data.index(b"\r\n\r\n")
        lines = bytes(data[:end_of_head]).decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            self.close()
            raise HttpError(f"bad status line {lines[0]!r}") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            self.close()
            raise HttpError("chunked answers are not expected from these servers")
        length = int(headers.get("content-length", "0"))
        want = length if limit is None else min(limit, length)
        kept = bytearray() if keep_body else None
        got = 0
        rest = memoryview(data)[end_of_head + 4:]
        extra = len(rest) > want and limit is None
        pieces = [rest[:want]] if len(rest) else []
        for piece in pieces:
            if sink is not None:
                sink(got, piece)
            if kept is not None:
                kept += piece
            got += len(piece)
        while got < want:
            n = self.sock.recv_into(self.view, min(RECV_BUFFER, want - got))
            if n == 0:
                self.close()
                raise HttpError(f"answer cut short at {got} of {length} body bytes")
            piece = self.view[:n]
            if sink is not None:
                sink(got, piece)
            if kept is not None:
                kept += piece
            got += n
        seconds = time.perf_counter() - start
        abandoned = want < length
        if abandoned or extra or headers.get("connection", "").lower() == "close":
            self.close()
        else:
            self.used = True
        return Answer(status, headers, length, got, ttfb, seconds, abandoned, bytes(kept) if kept is not None else b"")


class HashSink:
    """SHA-256 of a body."""

    def __init__(self):
        self.hash = hashlib.sha256()

    def __call__(self, offset: int, piece: memoryview) -> None:
        self.hash.update(piece)


class CompareSink:
    """Compares every body byte with the plaintext file from `base` on."""

    def __init__(self, fd: int, base: int):
        self.fd, self.base = fd, base
        self.mismatch_at: int | None = None

    def __call__(self, offset: int, piece: memoryview) -> None:
        if self.mismatch_at is None and os.pread(self.fd, len(piece), self.base + offset) != piece.tobytes():
            self.mismatch_at = self.base + offset


class SpotSink:
    """Compares a few 4 KiB windows at random places of a drained body with
    the plaintext file: cheap enough not to slow the client down, and enough
    to catch misplaced or foreign bytes."""

    def __init__(self, fd: int, length: int, rng: random.Random):
        self.fd = fd
        self.spots = sorted(rng.randrange(0, max(1, length - SPOT_BYTES)) for _ in range(SPOTS_PER_DOWNLOAD))
        self.checked = 0
        self.mismatch_at: int | None = None

    def __call__(self, offset: int, piece: memoryview) -> None:
        end = offset + len(piece)
        for spot in self.spots:
            if spot >= end:
                break
            lo, hi = max(spot, offset), min(spot + SPOT_BYTES, end)
            if lo < hi:
                if os.pread(self.fd, hi - lo, lo) != piece[lo - offset:hi - offset].tobytes():
                    self.mismatch_at = lo if self.mismatch_at is None else self.mismatch_at
                self.checked += hi - lo


# --------------------------------------------------------------------------- processes


def proc_status(pid: int) -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile (KiB) and Threads of a process."""
    out = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            out[name] = int(value.split()[0])
    return out


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """VmRSS of some processes every 10 ms, on a thread of its own."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.samples: dict[int, list[int]] = {pid: [] for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            for pid in self.pids:
                rss = proc_status(pid).get("VmRSS")
                if rss is not None:
                    self.samples[pid].append(rss)
            if self._stop.wait(SAMPLE_INTERVAL_S):
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class GunicornServer:
    """A gunicorn app started with the served code's gunicorn.conf.py (gthread,
    its thread count, keep-alive) on 127.0.0.1 with ONE worker, so the
    worker's process id is known: the master's only child."""

    def __init__(self, name: str, app: str, code: Path, log_path: Path, probe: str, env: dict, extra_args=(),
                 threads: int | None = None):
        self.name, self.app, self.code, self.log_path, self.probe = name, app, code, log_path, probe
        self.port = free_port()
        self.env = {**os.environ, **env, "WITNESS_BIND": f"127.0.0.1:{self.port}", "WITNESS_WORKERS": "1"}
        if threads:
            self.env["WITNESS_THREADS"] = str(threads)
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None
        self.boots = 0

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [server_python(), "-m", "gunicorn", "-c", str(self.code / "gunicorn.conf.py"),
                 *self.extra_args, self.app],
                cwd=self.code, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.boots += 1
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up; log: {self.log_path}")
            client = HttpClient(self.port, 2.0)
            try:
                answer = client.request("GET", self.probe)
                if answer.status == 200 and self.worker_pid() is not None:
                    return
                last = f"GET {self.probe} answered {answer.status}"
            except (HttpError, OSError) as exc:
                last = repr(exc)
            finally:
                client.close()
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {timeout} s ({last}); log: {self.log_path}")

    def worker_pid(self) -> int | None:
        """The master's only child, or None while there is not exactly one."""
        if self.process is None:
            return None
        children = [pid for pid in descendants(self.process.pid) if pid != self.process.pid]
        return children[0] if len(children) == 1 else None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()


# --------------------------------------------------------------------------- the footage


def plaintext_piece(seed: bytes, index: int, size: int) -> bytes:
    """Plaintext chunk `index`: AES-CTR keystream under a key made from the
    seed (random-looking, incompressible, several GB/s to make). Each chunk
    has its own 2^64-block counter space, so no two chunks share bytes."""
    nonce = index.to_bytes(8, "big") + bytes(8)
    return Cipher(algorithms.AES(seed), modes.CTR(nonce)).encryptor().update(bytes(size))


def write_plaintext(path: Path, seed: bytes, chunks: int, chunk_bytes: int) -> str:
    """Write the footage's plaintext to `path`, one chunk at a time; return
    its SHA-256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for index in range(chunks):
            piece = plaintext_piece(seed, index, chunk_bytes)
            digest.update(piece)
            out.write(piece)
    return digest.hexdigest()


def upload_recording(port: int, fd: int, chunks: int, chunk_bytes: int, connections: int,
                     timeout: float, deadline: float) -> dict:
    """Register a phone, create a recording and PUT every chunk (plaintext read
    back from the file, encrypted here), `connections` at a time. Returns the
    recording id, the device token and timings."""
    client = HttpClient(port, timeout)
    keys = json.loads(client.request("GET", "/v1/keys", keep_body=True).body)
    answer = client.request("POST", "/v1/devices", {"Content-Type": "application/json"}, b"{}", keep_body=True)
    if answer.status != 201:
        raise RuntimeError(f"device registration answered {answer.status}: {answer.body[:300]!r}")
    token = json.loads(answer.body)["access_token"]
    recording_id = str(uuid.uuid4())
    content_key = new_content_key()
    public = X25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(keys["hpke"]["public_key"] + "=="))
    body = json.dumps({
        "recording_id": recording_id, "content_type": "video/mp4", "started_at": rfc3339(time.time()),
        "key_id": keys["hpke"]["key_id"],
        "sealed_key": b64url(seal_content_key(public, recording_id, content_key)),
    }).encode()
    auth = {"Authorization": f"Bearer {token}"}
    answer = client.request("POST", "/v1/recordings", {"Content-Type": "application/json", **auth}, body,
                            keep_body=True)
    if answer.status != 201:
        raise RuntimeError(f"recording creation answered {answer.status}: {answer.body[:300]!r}")
    client.close()

    lock = threading.Lock()
    next_index = iter(range(chunks))
    failures: list[str] = []

    def uploader() -> None:
        conn = HttpClient(port, timeout)
        try:
            while not failures and time.monotonic() < deadline:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                plaintext = os.pread(fd, chunk_bytes, index * chunk_bytes)
                # Not marked final: a complete recording would be finalized in
                # the background (decrypting all of it), which is not measured here.
                chunk = encrypt_chunk(content_key, recording_id, index, plaintext, final=False)
                headers = {**auth, "Content-Type": "application/octet-stream",
                           "Content-Digest": content_digest(chunk), "Witness-Captured-At": rfc3339(time.time())}
                for _attempt in range(3):
                    try:
                        status = conn.request("PUT", f"/v1/recordings/{recording_id}/chunks/{index}",
                                              headers, chunk).status
                    except HttpError as exc:
                        status = f"transport: {exc}"
                    if status in (200, 201):
                        break
                    time.sleep(0.5)
                else:
                    failures.append(f"chunk {index}: {status}")
        finally:
            conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=uploader) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"upload failed: {failures[:3]}")
    client = HttpClient(port, timeout)
    status = json.loads(client.request("GET", f"/v1/recordings/{recording_id}/status", auth, keep_body=True).body)
    client.close()
    if status["received"] != [[0, chunks - 1]] or status["missing"]:
        raise RuntimeError(f"upload incomplete: received {status['received']}, missing {status['missing']}")
    return {"recording_id": recording_id, "seconds": seconds,
            "mb_per_s": chunks * chunk_bytes / seconds / 1e6}


def decrypt_reference(chunk_bytes: int, seconds: float, max_chunks: int = 20000) -> dict:
    """What the media endpoint does per byte at the very least, on one core,
    in this process: AES-256-GCM decrypt + SHA-256 of `chunk_bytes` chunks
    (footage.py checks each plaintext's SHA-256 against its record), and
    each of the two alone. MB/s (10^6)."""
    key, recording_id = new_content_key(), str(uuid.uuid4())
    plaintext = os.urandom(chunk_bytes)
    ciphertext = encrypt_chunk(key, recording_id, 7, plaintext, final=False)
    steps = {
        "decrypt_sha256": lambda: hashlib.sha256(decrypt_chunk(key, recording_id, 7, ciphertext, final=False)),
        "decrypt": lambda: decrypt_chunk(key, recording_id, 7, ciphertext, final=False),
        "sha256": lambda: hashlib.sha256(plaintext),
    }
    rates = {}
    for name, step in steps.items():
        budget = seconds if name == "decrypt_sha256" else seconds / 2
        count = 0
        start = time.perf_counter()
        while count < max_chunks and time.perf_counter() - start < budget:
            step()
            count += 1
        rates[name] = count * chunk_bytes / (time.perf_counter() - start) / 1e6
    return rates


# --------------------------------------------------------------------------- targets and phases


@dataclass
class Target:
    name: str
    server: GunicornServer
    path: str
    auth: dict = field(default_factory=dict)
    pid: int = 0
    baseline_kib: int = 0
    phases: dict = field(default_factory=dict)


class PhaseMemory:
    """Peak RSS of some workers over a block: VmHWM reset at the start and
    read at the end, plus VmRSS sampled every 10 ms."""

    def __init__(self, targets: list[Target]):
        self.targets = targets
        self.result: dict[str, dict] = {}

    def __enter__(self) -> "PhaseMemory":
        self.start_kib = {t.name: proc_status(t.pid).get("VmRSS") for t in self.targets}
        self.reset = {t.name: reset_peak_rss(t.pid) for t in self.targets}
        self.cpu = {t.name: proc_cpu(t.pid) for t in self.targets}
        self.sampler = RssSampler([t.pid for t in self.targets]).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.sampler.__exit__()
        for t in self.targets:
            status = proc_status(t.pid)
            samples = self.sampler.samples[t.pid]
            self.result[t.name] = {
                "start_kib": self.start_kib[t.name],
                "peak_reset": self.reset[t.name],
                "peak_kib": status.get("VmHWM"),
                "sampled_max_kib": max(samples) if samples else None,
                "sampled_median_kib": statistics.median(samples) if samples else None,
                "samples": len(samples),
                "end_kib": status.get("VmRSS"),
                "end_anon_kib": status.get("RssAnon"),
                "threads": status.get("Threads"),
                "worker_cpu_s": proc_cpu(t.pid) - self.cpu[t.name],
            }


def check_whole(answer: Answer, size: int) -> str:
    if answer.status != 200:
        return f"status {answer.status}"
    if answer.length != size or answer.received != size:
        return f"{answer.received} of {answer.length} bytes, expected {size}"
    return ""


def whole_download(target: Target, size: int, expected_sha256: str, timeout: float) -> dict:
    """One whole download, SHA-256 of the body checked against the plaintext's."""
    client = HttpClient(target.server.port, timeout)
    sink = HashSink()
    worker_cpu, client_cpu = proc_cpu(target.pid), time.thread_time()
    try:
        answer = client.request("GET", target.path, target.auth, sink=sink)
    finally:
        client.close()
    out = {
        "seconds": answer.seconds, "ttfb_ms": answer.ttfb * 1000, "mb_per_s": answer.received / answer.seconds / 1e6,
        "worker_cpu_s": proc_cpu(target.pid) - worker_cpu, "client_cpu_s": time.thread_time() - client_cpu,
        "bytes": answer.received,
    }
    problem = check_whole(answer, size) or ("" if sink.hash.hexdigest() == expected_sha256 else "SHA-256 differs")
    out["problem"] = problem
    out["verified"] = not problem
    return out


def drained_download(target: Target, size: int, fd: int, rng: random.Random, timeout: float) -> dict:
    """One whole download, body drained (no hashing), 16 spot checks."""
    client = HttpClient(target.server.port, timeout)
    sink = SpotSink(fd, size, rng)
    worker_cpu, client_cpu = proc_cpu(target.pid), time.thread_time()
    try:
        answer = client.request("GET", target.path, target.auth, sink=sink)
    finally:
        client.close()
    problem = check_whole(answer, size) or (f"spot check failed at {sink.mismatch_at}"
                                            if sink.mismatch_at is not None else "")
    return {
        "seconds": answer.seconds, "mb_per_s": answer.received / answer.seconds / 1e6,
        "worker_cpu_s": proc_cpu(target.pid) - worker_cpu, "client_cpu_s": time.thread_time() - client_cpu,
        "spot_bytes": sink.checked, "problem": problem, "rss_after_kib": proc_status(target.pid).get("VmRSS"),
    }


def range_plan(size: int, args, rng: random.Random) -> list[dict]:
    """The browser-like session, the same for both servers: `bytes=0-` first,
    then open-ended seeks (abandoned after 1..seek_read_mib MiB), bounded
    ranges (1 byte .. 4 MiB, log-uniform) and suffix ranges (1 byte ..
    8 MiB), shuffled."""
    plan = [{"kind": "seek", "header": "bytes=0-", "start": 0, "end": size - 1,
             "limit": int(args.seek_read_mib * MIB)}]
    rest = []
    for _ in range(args.seeks):
        start = rng.randrange(0, size)
        rest.append({"kind": "seek", "header": f"bytes={start}-", "start": start, "end": size - 1,
                     "limit": rng.randrange(MIB, int(args.seek_read_mib * MIB) + 1)})
    for _ in range(args.ranges):
        length = min(size, int(2 ** rng.uniform(0, 22)))
        start = rng.randrange(0, size - length + 1)
        rest.append({"kind": "bounded", "header": f"bytes={start}-{start + length - 1}", "start": start,
                     "end": start + length - 1, "limit": None})
    for _ in range(args.suffixes):
        length = min(size, int(2 ** rng.uniform(0, 23)))
        rest.append({"kind": "suffix", "header": f"bytes=-{length}", "start": size - length, "end": size - 1,
                     "limit": None})
    rng.shuffle(rest)
    return plan + rest


def range_session(target: Target, plan: list[dict], size: int, fd: int, timeout: float, deadline: float) -> dict:
    """Run the plan on one keep-alive connection (a new one after every
    abandoned request); every byte compared with the plaintext."""
    client = HttpClient(target.server.port, timeout)
    times: dict[str, list[float]] = {"seek": [], "bounded": [], "suffix": []}
    ttfb: dict[str, list[float]] = {"seek": [], "bounded": [], "suffix": []}
    problems: list[str] = []
    verified = served = done = 0
    try:
        for item in plan:
            if time.monotonic() > deadline:
                problems.append(f"stopped after {done} of {len(plan)} requests: time budget")
                break
            sink = CompareSink(fd, item["start"])
            try:
                answer = client.request("GET", target.path, {**target.auth, "Range": item["header"]},
                                        sink=sink, limit=item["limit"])
            except HttpError as exc:
                problems.append(f"{item['header']}: {exc}")
                continue
            done += 1
            expected_length = item["end"] - item["start"] + 1
            expected_read = expected_length if item["limit"] is None else min(item["limit"], expected_length)
            content_range = f"bytes {item['start']}-{item['end']}/{size}"
            if answer.status != 206:
                problems.append(f"{item['header']}: status {answer.status}")
            elif answer.headers.get("content-range") != content_range:
                problems.append(f"{item['header']}: Content-Range {answer.headers.get('content-range')!r}, "
                                f"expected {content_range!r}")
            elif answer.length != expected_length or answer.received != expected_read:
                problems.append(f"{item['header']}: {answer.received} of {answer.length} bytes")
            elif sink.mismatch_at is not None:
                problems.append(f"{item['header']}: bytes differ from offset {sink.mismatch_at}")
            else:
                verified += answer.received
            served += answer.received
            times[item["kind"]].append(answer.seconds * 1000)
            ttfb[item["kind"]].append(answer.ttfb * 1000)
    finally:
        client.close()
    return {"requests": done, "planned": len(plan), "bytes": served, "verified_bytes": verified,
            "problems": problems, "ms": times, "ttfb_ms": ttfb, "connections": client.connections}


def parallel_downloads(target: Target, count: int, size: int, expected_sha256: str, timeout: float) -> dict:
    """`count` whole downloads at once, each on its own connection and
    thread, each SHA-256-checked."""
    results: list[dict | None] = [None] * count

    def one(i: int) -> None:
        try:
            results[i] = whole_download(target, size, expected_sha256, timeout)
        except HttpError as exc:
            results[i] = {"problem": str(exc), "verified": False, "bytes": 0}

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    total = sum(r["bytes"] for r in results)
    return {"downloads": count, "seconds": seconds, "bytes": total, "mb_per_s": total / seconds / 1e6,
            "verified": sum(1 for r in results if r["verified"]),
            "problems": [r["problem"] for r in results if r["problem"]]}


def warm_up(target: Target, size: int, timeout: float) -> None:
    """A few small requests, so that what the first request of a worker
    loads (modules, keys, connections) is not counted as growth."""
    client = HttpClient(target.server.port, timeout)
    try:
        for header in ("bytes=0-1023", "bytes=-1024", f"bytes={size // 2}-{size // 2 + MIB}"):
            answer = client.request("GET", target.path, {**target.auth, "Range": header})
            if answer.status != 206:
                raise RuntimeError(f"{target.name}: warm-up {header} answered {answer.status}")
    finally:
        client.close()


def staff_login(server: GunicornServer, timeout: float, username: str = STAFF_USER,
                password: str = STAFF_PASSWORD) -> dict:
    client = HttpClient(server.port, timeout)
    body = json.dumps({"username": username, "password": password}).encode()
    answer = client.request("POST", "/v1/auth/login", {"Content-Type": "application/json"}, body, keep_body=True)
    client.close()
    if answer.status != 200:
        raise RuntimeError(f"{username}: login answered {answer.status}: {answer.body[:300]!r}")
    return {"Authorization": f"Bearer {json.loads(answer.body)['access_token']}"}


def witness_cli(server: GunicornServer, *argv: str, env: dict | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """`flask --app wsgi witness ...` against the server's data and keys,
    as an operator runs it (its own process; the worker is not involved)."""
    return subprocess.run([server_python(), "-m", "flask", "--app", "wsgi", "witness", *argv],
                          cwd=server.code, env={**server.env, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def create_staff_user(server: GunicornServer, username: str = STAFF_USER, role: str = "observer",
                      password: str = STAFF_PASSWORD) -> None:
    done = witness_cli(server, "create-user", username, "--role", role, env={"WITNESS_PASSWORD": password},
                       timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"create-user {username} failed: {done.stderr.strip()[-500:]}")


# --------------------------------------------------------------------------- the copy bundle


GNU_TIME = Path("/usr/bin/time")


def measured_child(argv: list[str], cwd: Path, env: dict, log_path: Path, timeout: float) -> dict:
    """Run a process to its end, output to `log_path`, and return its exit
    code, wall time, CPU time and peak RSS (KiB). The peak comes from GNU
    time's `%M` when /usr/bin/time exists: the ru_maxrss that this process
    would get from wait4 is useless here, because Linux starts a child's
    maxrss at the RSS of the process it was forked from (this benchmark,
    ~65 MiB), while /usr/bin/time is tiny. Without it, VmRSS sampled every
    10 ms (a lower bound) is reported."""
    stats = log_path.with_suffix(".time")
    wrapped = [str(GNU_TIME), "-f", "%M %U %S", "-o", str(stats), *argv] if GNU_TIME.exists() else argv
    with open(log_path, "wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        try:
            with RssSampler([process.pid]) as sampler:
                _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    samples = sampler.samples[process.pid]
    result = {"exit_code": process.returncode, "seconds": seconds, "output": log_path.read_text(errors="replace")}
    if GNU_TIME.exists():
        try:
            peak, user, system = stats.read_text().split()[-3:]
            result.update(peak_kib=int(peak), cpu_s=float(user) + float(system), peak_method="GNU time %M")
        except (OSError, ValueError):
            result.update(peak_kib=None, cpu_s=None, peak_method="GNU time gave nothing")
        stats.unlink(missing_ok=True)
    else:
        result.update(peak_kib=max(samples) if samples else None, cpu_s=usage.ru_utime + usage.ru_stime,
                      peak_method="VmRSS sampled every 10 ms")
    return result


def json_call(client: HttpClient, method: str, path: str, auth: dict, body: dict | None = None) -> tuple[int, dict]:
    raw = b"" if body is None else json.dumps(body).encode()
    headers = auth if body is None else {**auth, "Content-Type": "application/json"}
    answer = client.request(method, path, headers, raw, keep_body=True)
    try:
        return answer.status, json.loads(answer.body)
    except ValueError:
        return answer.status, {"body": answer.body[:300].decode("latin-1")}


def wire_seconds(earlier: str, later: str) -> float:
    """Seconds between two wire times (RFC 3339, milliseconds, server clock)."""
    return (datetime.fromisoformat(later.replace("Z", "+00:00"))
            - datetime.fromisoformat(earlier.replace("Z", "+00:00"))).total_seconds()


def approve_and_wait(target: Target, request_id: str, lawyer: dict, custodian: dict, timeout: float,
                     deadline: float) -> dict:
    """A custodian approves the copy request; the lawyer then asks for it
    every 0.1 s until the worker's scheduler has built the bundle (`ready`)
    or failed. The build time itself comes from the server's clock: the
    bundle's `built_at` (written as the build starts) to the request's
    `updated_at` when ready (after the zip is hashed, fsync'd and renamed)."""
    client = HttpClient(target.server.port, timeout)
    states: list[str] = []
    polls = 0
    try:
        start = time.perf_counter()
        status, found = json_call(client, "POST", f"/v1/copy-requests/{request_id}/approve", custodian,
                                  {"reason": "benchmark"})
        if status != 200:
            return {"problem": f"approve answered {status}: {found}", "requests": 1, "bytes": None}
        while found.get("state") not in ("ready", "failed") and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
            status, found = json_call(client, "GET", f"/v1/copy-requests/{request_id}", lawyer)
            polls += 1
            if status != 200:
                return {"problem": f"polling answered {status}: {found}", "requests": 1 + polls, "bytes": None}
            if not states or states[-1] != found["state"]:
                states.append(found["state"])
        seconds = time.perf_counter() - start
    finally:
        client.close()
    out = {"requests": 1 + polls, "polls": polls, "bytes": None, "states_seen": states,
           "approval_to_ready_s": seconds, "request": found, "problem": ""}
    if found.get("state") != "ready":
        out["problem"] = (f"the build failed: {found.get('failure')}" if found.get("state") == "failed"
                          else f"not ready after {seconds:.0f} s (state {found.get('state')})")
        return out
    bundle = found["bundle"]
    out["build_s"] = wire_seconds(bundle["built_at"], found["updated_at"])
    out["scheduler_wait_s"] = wire_seconds(found["decided_at"], bundle["built_at"])
    return out


def download_bundle(target: Target, found: dict, lawyer: dict, path: Path, timeout: float) -> dict:
    """GET the ready bundle as the lawyer, write it to `path` and check its
    size and SHA-256 against the request's `bundle`."""
    client = HttpClient(target.server.port, timeout)
    digest = hashlib.sha256()
    worker_cpu = proc_cpu(target.pid)
    try:
        with open(path, "wb") as out:
            def sink(offset: int, piece: memoryview) -> None:
                digest.update(piece)
                out.write(piece)
            answer = client.request("GET", found["bundle"]["url"], lawyer, sink=sink)
    finally:
        client.close()
    expected = found["bundle"]
    problem = check_whole(answer, expected["size"])
    if not problem and answer.headers.get("content-type") != "application/zip":
        problem = f"Content-Type {answer.headers.get('content-type')!r}"
    if not problem and digest.hexdigest() != expected["sha256"]:
        problem = "SHA-256 differs from the request's bundle.sha256"
    return {"requests": 1, "bytes": answer.received, "seconds": answer.seconds,
            "mb_per_s": answer.received / answer.seconds / 1e6, "worker_cpu_s": proc_cpu(target.pid) - worker_cpu,
            "sha256": digest.hexdigest(), "problem": problem, "verified": not problem}


def bundle_phase(target: Target, recording_id: str, size: int, code: Path, root: Path, log_dir: Path,
                 timeout: float, deadline: float, note) -> dict:
    """The copy of the whole recording: finalize it (its first manifest, in
    an operator command's own process), a lawyer asks, a custodian approves,
    the worker builds the bundle (measured), the lawyer downloads it
    (measured) and `witness-verify` checks it in a process of its own
    (measured). The downloaded zip is deleted at the end."""
    server = target.server
    out: dict = {"problems": []}
    problems = out["problems"]
    create_staff_user(server, LAWYER_USER, "lawyer", LAWYER_PASSWORD)
    create_staff_user(server, CUSTODIAN_USER, "custodian", CUSTODIAN_PASSWORD)
    # The servers run with WITNESS_IDLE_FINALIZE_SECONDS=3600, so the
    # recording has no manifest yet, and a copy is made from a manifest.
    finalize = measured_child(
        [server_python(), "-m", "flask", "--app", "wsgi", "witness", "finalize-due"], server.code,
        {**server.env, "WITNESS_IDLE_FINALIZE_SECONDS": "0.001"}, log_dir / "finalize-due.log", timeout=600)
    out["finalize"] = finalize
    if finalize["exit_code"] != 0 or f"{recording_id} manifest version 1" not in finalize["output"]:
        problems.append(f"finalize-due: exit {finalize['exit_code']}: {finalize['output'].strip()[-300:]}")
        return out
    note(f"finalized (manifest v1) in {finalize['seconds']:.1f} s in its own process")
    lawyer = staff_login(server, timeout, LAWYER_USER, LAWYER_PASSWORD)
    custodian = staff_login(server, timeout, CUSTODIAN_USER, CUSTODIAN_PASSWORD)
    client = HttpClient(server.port, timeout)
    try:
        status, asked = json_call(client, "POST", f"/v1/recordings/{recording_id}/copy-requests", lawyer,
                                  {"case_reference": "Bench v. Media, No. 1", "purpose": "Benchmark of the bundle"})
    finally:
        client.close()
    if status != 201:
        problems.append(f"copy request answered {status}: {asked}")
        return out
    request_id = asked["request_id"]

    with PhaseMemory([target]) as memory:
        build = approve_and_wait(target, request_id, lawyer, custodian, timeout, min(deadline, time.monotonic() + 600))
    build["memory"] = memory.result[target.name]
    target.phases["bundle_build"] = build
    if build["problem"]:
        problems.append(f"build: {build['problem']}")
        return out
    found = build["request"]
    note(f"bundle built in {build['build_s']:.1f} s ({size / build['build_s'] / 1e6:.0f} MB/s of footage; "
         f"approval to ready {build['approval_to_ready_s']:.1f} s), zip {found['bundle']['size']:,} bytes; "
         f"worker peak RSS {build['memory']['peak_kib'] / 1024:.1f} MiB")

    zip_path = root / "downloaded-bundle.zip"
    try:
        with PhaseMemory([target]) as memory:
            try:
                download = download_bundle(target, found, lawyer, zip_path, timeout)
            except HttpError as exc:
                download = {"problem": str(exc), "requests": 1, "bytes": 0, "verified": False}
        download["memory"] = memory.result[target.name]
        target.phases["bundle_download"] = download
        if download["problem"]:
            problems.append(f"download: {download['problem']}")
            return out
        note(f"bundle downloaded at {download['mb_per_s']:.0f} MB/s, SHA-256 as the request says; "
             f"worker peak RSS {download['memory']['peak_kib'] / 1024:.1f} MiB")
        # The verifier's module in the served code (sync/verify.py before it
        # moved into the evidence package).
        verifier = "sync.evidence.verify" if (code / "sync" / "evidence" / "verify.py").is_file() else "sync.verify"
        out["verifier"] = verifier
        # What the interpreter and witness-verify's imports take on their own,
        # so that its peak can be read as growth.
        out["verify_imports"] = measured_child([server_python(), "-c", f"import {verifier}"], code, dict(os.environ),
                                               log_dir / "witness-verify-imports.log", timeout=120)
        # `python -m <verifier>` from the served code, not the console script
        # of the editable install: with --at-commit it checks with that commit's code.
        verify = measured_child([server_python(), "-m", verifier, str(zip_path)], code, dict(os.environ),
                                log_dir / "witness-verify.log", timeout=max(60.0, deadline - time.monotonic()))
        out["verify"] = verify
        last = verify["output"].strip().splitlines()[-1:] or [""]
        verify["last_line"] = last[0]
        if verify["exit_code"] != 0:
            problems.append(f"witness-verify exited {verify['exit_code']}: {last[0][:300]}")
        note(f"witness-verify: exit {verify['exit_code']} in {verify['seconds']:.1f} s, "
             f"peak RSS {mib(verify['peak_kib'])} MiB")
    finally:
        zip_path.unlink(missing_ok=True)
    out["request"] = found
    return out


# --------------------------------------------------------------------------- the run


def scan_server_log(path: Path, stop_offset: int, workers: int) -> dict:
    """bench/ingest.py's log scan, less gunicorn's "Worker (pid:N) was sent
    SIGTERM!" after `stop_offset`: this benchmark stops its servers with
    SIGTERM, and the master logs that line when it reaps the worker it told
    to stop."""
    findings = scan_log(path, stop_offset, workers)
    tail = path.read_bytes()[stop_offset:].decode("utf-8", "replace") if path.exists() else ""
    expected = [line[:300] for line in tail.splitlines() if "was sent SIGTERM" in line]
    findings["shutdown_problems"] = max(0, findings["shutdown_problems"] - len(expected))
    findings["samples"] = [line for line in findings["samples"] if line not in expected]
    return findings


def export_commit(rev: str, dest: Path) -> str:
    """Unpack the tree of commit `rev` into `dest` (`git archive`), so the
    servers run exactly that commit whatever the working tree holds. Returns
    the short commit id."""
    def git(*argv, **kw):
        return subprocess.run(["git", *argv], cwd=PROJECT_ROOT, check=True, timeout=120, **kw)
    short = git("rev-parse", "--short", f"{rev}^{{commit}}", capture_output=True, text=True).stdout.strip()
    dest.mkdir(parents=True)
    archive = git("archive", "--format=tar", short, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return short


def served_code(code: Path) -> str:
    """Where the server imports the project from when started in `code`
    (it must be `code` itself, not the editable install's checkout)."""
    found = subprocess.run([server_python(), "-c", "import server, sync, crypto; "
                            "print(server.__file__, sync.__file__, crypto.__file__)"],
                           cwd=code, capture_output=True, text=True, timeout=60).stdout.split()
    if len(found) != 3 or not all(Path(f).resolve().is_relative_to(code.resolve()) for f in found):
        raise RuntimeError(f"started in {code}, the server would import {found}")
    return str(code)


def run(args, root: Path, log_dir: Path) -> dict:
    deadline = time.monotonic() + args.max_total
    chunks, chunk_bytes = args.size_mib * MIB // (args.chunk_kib * 1024), args.chunk_kib * 1024
    size = chunks * chunk_bytes
    out: dict = {"size": size, "chunks": chunks, "chunk_bytes": chunk_bytes}
    rng = random.Random(args.seed)

    def note(text: str) -> None:
        print(f"# {text}", file=sys.stderr, flush=True)

    out["reference_before"] = decrypt_reference(chunk_bytes, args.reference_seconds)
    plaintext_path = root / "plaintext.bin"
    t0 = time.perf_counter()
    expected = write_plaintext(plaintext_path, hashlib.sha256(str(args.seed).encode()).digest(), chunks, chunk_bytes)
    out["plaintext_seconds"] = time.perf_counter() - t0
    out["plaintext_sha256"] = expected
    note(f"plaintext: {size:,} bytes in {out['plaintext_seconds']:.1f} s, sha256 {expected[:16]}…")
    code = PROJECT_ROOT
    if args.at_commit:
        code = root / "code"
        out["commit"] = export_commit(args.at_commit, code)
        note(f"serving commit {out['commit']} from {code}")
    served_code(code)
    out["threads"] = args.threads or runpy.run_path(str(code / "gunicorn.conf.py"))["threads"]
    fd = os.open(plaintext_path, os.O_RDONLY)
    witness = GunicornServer(
        "witness", "wsgi:app", code, log_dir / "server-witness-upload.log", "/v1/keys",
        {"WITNESS_DATA_DIR": str(root / "data"), "WITNESS_KEYS_DIR": str(root / "keys"),
         "WITNESS_IDLE_FINALIZE_SECONDS": "3600"}, threads=args.threads)
    peer = GunicornServer(
        "send_file", "sendfile_app:app", code, log_dir / "server-send_file.log", "/ping",
        {"WITNESS_BENCH_FILE": str(plaintext_path)}, ["--pythonpath", str(PROJECT_ROOT / "bench")],
        threads=args.threads)
    try:
        witness.start()
        upload = upload_recording(witness.port, fd, chunks, chunk_bytes, args.upload_connections,
                                  args.timeout, deadline)
        after_upload = proc_status(witness.worker_pid())
        upload["worker_peak_kib"], upload["worker_end_kib"] = after_upload.get("VmHWM"), after_upload.get("VmRSS")
        out["upload"] = upload
        note(f"uploaded {chunks} chunks in {upload['seconds']:.1f} s ({upload['mb_per_s']:.0f} MB/s); "
             f"worker peak RSS during upload {after_upload.get('VmHWM', 0) / 1024:.0f} MiB")
        create_staff_user(witness)
        # A fresh worker: what the upload left in the heap is not measured.
        upload_log_end = witness.log_path.stat().st_size
        witness.stop()
        upload["server_log"] = {"path": str(witness.log_path),
                                "findings": scan_server_log(witness.log_path, upload_log_end, 1)}
        witness.log_path, witness.boots = log_dir / "server-witness.log", 0
        witness.start()
        peer.start()
        targets = [Target("witness", witness, f"/v1/recordings/{upload['recording_id']}/media"),
                   Target("send_file", peer, "/file")]
        witness_target = targets[0]
        witness_target.auth = staff_login(witness, args.timeout)
        for t in targets:
            t.pid = t.server.worker_pid()
            warm_up(t, size, args.timeout)
        time.sleep(0.5)
        for t in targets:
            t.baseline_kib = proc_status(t.pid)["VmRSS"]
            t.phases["baseline"] = proc_status(t.pid)
        note("baseline RSS: " + ", ".join(f"{t.name} {t.baseline_kib / 1024:.1f} MiB" for t in targets))

        def phase(name: str, work) -> None:
            if time.monotonic() > deadline - 10:
                note(f"skipped {name}: --max-total reached")
                return
            witness_target.auth = staff_login(witness, args.timeout)   # 15-minute staff tokens
            for t in targets:
                with PhaseMemory([t]) as memory:
                    try:
                        result = work(t)
                    except HttpError as exc:
                        result = {"problem": str(exc), "problems": [str(exc)], "verified": False}
                result["memory"] = memory.result[t.name]
                t.phases[name] = result
                note(f"{name} {t.name}: peak RSS {result['memory']['peak_kib'] / 1024:.1f} MiB"
                     + (f", {result['mb_per_s']:.0f} MB/s" if "mb_per_s" in result else "")
                     + (f", problems: {result['problems'][:2]}" if result.get("problems") else "")
                     + (f", problem: {result['problem']}" if result.get("problem") else ""))

        phase("whole", lambda t: whole_download(t, size, expected, args.timeout))
        for t in targets:
            # The baseline: the fresh, warmed-up worker's RSS right before its
            # first whole download (its RSS 0.5 s after the warm-up, often a
            # MiB or two higher until freed memory is returned, stays in
            # phases["baseline"]).
            t.baseline_kib = t.phases.get("whole", {}).get("memory", {}).get("start_kib") or t.baseline_kib
        plan = range_plan(size, args, rng)
        phase("ranges", lambda t: range_session(t, plan, size, fd, args.timeout, deadline))
        if args.parallel > 1:
            phase("parallel", lambda t: parallel_downloads(t, args.parallel, size, expected, args.timeout))

        # Throughput: whole downloads, the two servers interleaved ABBA so that
        # a slow minute on the shared machine hits both.
        if time.monotonic() < deadline - 10:
            witness_target.auth = staff_login(witness, args.timeout)
            runs: dict[str, list[dict]] = {t.name: [] for t in targets}
            cpu0, ticks0 = time.process_time(), machine_ticks()
            worker_cpu0 = {t.name: proc_cpu(t.pid) for t in targets}
            wall0 = time.perf_counter()
            with PhaseMemory(targets) as memory:
                for i in range(args.repetitions):
                    if time.monotonic() > deadline - 5:
                        note(f"throughput stopped after {i} repetitions: --max-total reached")
                        break
                    for t in (targets if i % 2 == 0 else targets[::-1]):
                        try:
                            runs[t.name].append(drained_download(t, size, fd, rng, args.timeout))
                        except HttpError as exc:
                            runs[t.name].append({"problem": str(exc)})
            wall, ticks1 = time.perf_counter() - wall0, machine_ticks()
            busy, steal, total = (ticks1[k] - ticks0[k] for k in range(3))
            cpus = os.cpu_count() or 1
            client_cores = (time.process_time() - cpu0) / wall
            server_cores = sum(proc_cpu(t.pid) - worker_cpu0[t.name] for t in targets) / wall
            out["machine"] = {
                "busy_pct": 100 * busy / total if total else None,
                "steal_pct": 100 * steal / total if total else None,
                "client_cores": client_cores, "server_cores": server_cores,
                "other_cores": max(0.0, busy / total * cpus - client_cores - server_cores) if total else None,
            }
            for t in targets:
                good = [r for r in runs[t.name] if not r.get("problem")]
                t.phases["throughput"] = {
                    "runs": runs[t.name],
                    "problems": [r["problem"] for r in runs[t.name] if r.get("problem")],
                    "requests": len(runs[t.name]), "bytes": size * len(good),
                    "mb_per_s": statistics.median(r["mb_per_s"] for r in good) if good else None,
                    "memory": memory.result[t.name],
                }
                note(f"throughput {t.name}: median {t.phases['throughput']['mb_per_s'] or 0:.0f} MB/s over "
                     f"{len(good)} downloads; peak RSS {memory.result[t.name]['peak_kib'] / 1024:.1f} MiB")
            pairs = [w["mb_per_s"] / s["mb_per_s"] for w, s in zip(runs["witness"], runs["send_file"])
                     if not w.get("problem") and not s.get("problem")]
            out["pair_ratio_median"] = statistics.median(pairs) if pairs else None
        # The copy bundle: the witness server only (send_file has no equivalent).
        if time.monotonic() < deadline - 30:
            try:
                out["bundle"] = bundle_phase(witness_target, upload["recording_id"], size, code, root, log_dir,
                                             args.timeout, deadline, note)
            except (RuntimeError, HttpError, OSError, subprocess.SubprocessError) as exc:
                out["bundle"] = {"problems": [f"stopped: {exc}"]}
            for line in out["bundle"]["problems"]:
                note(f"bundle: {line}")
        else:
            note("skipped the bundle: --max-total reached")
        for t in targets:
            t.phases["lifetime"] = proc_status(t.pid)
    finally:
        os.close(fd)
        stop_offsets = {}
        for server in (witness, peer):
            stop_offsets[server.name] = server.log_path.stat().st_size if server.log_path.exists() else 0
            server.stop()
        out["server_logs"] = {s.name: {"path": str(s.log_path),
                                       "findings": scan_server_log(s.log_path, stop_offsets[s.name],
                                                                   max(1, s.boots))}
                              for s in (witness, peer) if s.boots}
        if "upload" in out and "server_log" in out["upload"]:
            out["server_logs"]["witness (upload)"] = out["upload"]["server_log"]
    out["reference_after"] = decrypt_reference(chunk_bytes, args.reference_seconds)
    out["targets"] = {t.name: {"baseline_kib": t.baseline_kib, "pid": t.pid, "phases": t.phases} for t in targets}
    return out


# --------------------------------------------------------------------------- report


def fmt(value, digits=0) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:,.{digits}f}"


def mib(kib) -> str:
    return "—" if kib is None else f"{kib / 1024:,.1f}"


def signed(kib) -> str:
    return "—" if kib is None else ("+" if kib >= 0 else "") + mib(kib)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def markdown(out: dict, meta: dict) -> str:
    lines = []
    refs = [r for r in (out.get("reference_before"), out.get("reference_after")) if r]

    def ref_rate(name: str) -> float | None:
        return statistics.mean(r[name] for r in refs) if refs else None
    ref_mean = ref_rate("decrypt_sha256")
    size = out["size"]
    lines.append(f"Witness Sync media benchmark — {meta['when']}, code {meta['code']}  ")
    lines.append(f"footage {size:,} bytes ({out['chunks']:,} chunks of {out['chunk_bytes'] // 1024} KiB plaintext); "
                 f"gunicorn.conf.py with 1 worker × {out['threads']} threads for both servers; "
                 f"{meta['cpus']} CPUs, client and servers on the same machine; "
                 f"reference, one core in-process, mean of before and after: AES-256-GCM decrypt + SHA-256 "
                 f"{fmt(ref_mean)} MB/s ({' and '.join(fmt(r['decrypt_sha256']) for r in refs)}), "
                 f"decrypt alone {fmt(ref_rate('decrypt'))}, SHA-256 alone {fmt(ref_rate('sha256'))}  ")
    up = out.get("upload", {})
    lines.append(f"upload: {fmt(up.get('seconds'), 1)} s ({fmt(up.get('mb_per_s'))} MB/s, "
                 f"{meta['upload_connections']} connections); the witness worker then restarted")
    lines.append("")
    targets = out.get("targets", {})
    lines.append("Worker memory, MiB. Baseline: the warmed-up worker's RSS right before its first whole download; "
                 "peak: VmHWM, reset at the start of each phase; growth: peak − baseline; in phase: peak − RSS at "
                 "the phase's start:")
    lines.append("")
    lines.append("| server | phase | requests | bytes served | baseline RSS | RSS at start | peak RSS "
                 "| max sampled RSS | growth | in phase | RSS after | worker CPU s |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {"whole": "whole download (a)", "ranges": "range session (b)", "parallel": "parallel whole downloads",
             "throughput": "throughput downloads", "bundle_build": "bundle build (approval → ready)",
             "bundle_download": "bundle download"}
    for name, t in targets.items():
        base = t["baseline_kib"]
        for key, label in names.items():
            p = t["phases"].get(key)
            if not p:
                continue
            m = p["memory"]
            requests = p.get("requests", p.get("downloads", 1))
            peak = m["peak_kib"] if m["peak_reset"] else None
            top = peak if peak is not None else m["sampled_max_kib"]
            growth = None if top is None else top - base
            in_phase = None if top is None or m["start_kib"] is None else top - m["start_kib"]
            lines.append(f"| {name} | {label} | {fmt(requests)} | {fmt(p.get('bytes'))} | {mib(base)} "
                         f"| {mib(m['start_kib'])} | {mib(peak)} | {mib(m['sampled_max_kib'])} | {signed(growth)} | {signed(in_phase)} "
                         f"| {mib(m['end_kib'])} | {fmt(m['worker_cpu_s'], 1)} |")
    lines.append("")
    w, s = targets.get("witness", {}).get("phases", {}), targets.get("send_file", {}).get("phases", {})
    lines.append(f"Whole downloads of {size / MIB:,.0f} MiB (MB = 10^6 bytes):")
    lines.append("")
    lines.append("| server | one verified download MB/s | drained downloads | median MB/s | min–max MB/s "
                 "| worker CPU s per GiB | client CPU s per GiB | parallel ×N MB/s total | ratio to send_file "
                 "| ratio to reference |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    def good_runs(phases: dict) -> list[dict]:
        return [r for r in phases.get("throughput", {}).get("runs", []) if not r.get("problem")]

    medians = {name: (statistics.median(r["mb_per_s"] for r in good_runs(phases)) if good_runs(phases) else None)
               for name, phases in (("witness", w), ("send_file", s))}
    for name, phases in (("witness", w), ("send_file", s)):
        good = good_runs(phases)
        rates = [r["mb_per_s"] for r in good]
        gib = size / (1024 ** 3)
        wcpu = statistics.median(r["worker_cpu_s"] for r in good) / gib if good else None
        ccpu = statistics.median(r["client_cpu_s"] for r in good) / gib if good else None
        par = phases.get("parallel")
        par_text = f"{fmt(par['mb_per_s'])} (×{par['downloads']})" if par and "mb_per_s" in par else "—"
        if name == "send_file":
            vs_peer = "1"
        elif medians[name] and medians.get("send_file"):
            vs_peer = fmt(medians[name] / medians["send_file"], 2)
        else:
            vs_peer = "—"
        vs_ref = fmt(medians[name] / ref_mean, 2) if medians[name] and ref_mean else "—"
        span = f"{fmt(min(rates))}–{fmt(max(rates))}" if rates else "—"
        lines.append(
            f"| {name} | {fmt(phases.get('whole', {}).get('mb_per_s'))} | {len(good)} | {fmt(medians[name])} "
            f"| {span} | {fmt(wcpu, 2)} | {fmt(ccpu, 2)} | {par_text} | {vs_peer} | {vs_ref} |")
    if out.get("pair_ratio_median") is not None:
        lines.append("")
        lines.append(f"Median of the per-pair ratios (witness ÷ send_file, one ABBA pair each): "
                     f"{fmt(out['pair_ratio_median'], 2)}.")
    for name, phases in (("witness", w), ("send_file", s)):
        after = [r.get("rss_after_kib") for r in phases.get("throughput", {}).get("runs", [])]
        if after and None not in after:
            lines.append(f"{name} worker RSS after each throughput download, MiB: "
                         + ", ".join(mib(a) for a in after) + ".  ")
    mach = out.get("machine")
    if mach:
        lines.append(f"During the throughput downloads: machine {fmt(mach['busy_pct'])} % busy, steal "
                     f"{fmt(mach['steal_pct'], 1)} %; client {fmt(mach['client_cores'], 2)} cores, workers "
                     f"{fmt(mach['server_cores'], 2)}, everything else {fmt(mach['other_cores'], 2)}.")
    lines.append("")
    lines.append("Range requests, one keep-alive connection like a `<video>` element (a new one after each "
                 "abandoned request), every byte compared with the plaintext; milliseconds:")
    lines.append("")
    lines.append("| server | seeks `bytes=N-`, abandoned after 1-8 MiB: first byte p50 / p95 | read p50 / p95 "
                 "| bounded `bytes=a-b`, 1 B-4 MiB: p50 / p95 / max | suffix `bytes=-N`, 1 B-8 MiB: p50 / p95 / max "
                 "| requests | bytes verified | problems |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, phases in (("witness", w), ("send_file", s)):
        r = phases.get("ranges")
        if not r:
            continue
        seek_t, seek_f = r["ms"]["seek"], r["ttfb_ms"]["seek"]
        b, x = r["ms"]["bounded"], r["ms"]["suffix"]
        probs = r["problems"]
        lines.append(
            f"| {name} | {fmt(pct(seek_f, 50), 1)} / {fmt(pct(seek_f, 95), 1)} ({len(seek_f)}) "
            f"| {fmt(pct(seek_t, 50), 1)} / {fmt(pct(seek_t, 95), 1)} "
            f"| {fmt(pct(b, 50), 1)} / {fmt(pct(b, 95), 1)} / {fmt(max(b) if b else None, 1)} ({len(b)}) "
            f"| {fmt(pct(x, 50), 1)} / {fmt(pct(x, 95), 1)} / {fmt(max(x) if x else None, 1)} ({len(x)}) "
            f"| {r['requests']} of {r['planned']} | {fmt(r['verified_bytes'])} "
            f"| {'none' if not probs else str(len(probs)) + ': ' + '; '.join(probs[:3])} |")
    lines.append("")
    bundle = out.get("bundle")
    if bundle:
        lines += bundle_table(bundle, w, targets.get("witness", {}).get("baseline_kib"), size, ref_mean)
    problems = [f"bundle: {x}" for x in (bundle or {}).get("problems", [])]
    for name, phases in (("witness", w), ("send_file", s)):
        for key in ("whole", "parallel", "throughput"):
            p = phases.get(key, {})
            found = p.get("problems") or ([p["problem"]] if p.get("problem") else [])
            problems += [f"{name} {key}: {x}" for x in found]
        if phases.get("whole") and not phases["whole"].get("verified"):
            problems.append(f"{name} whole: not verified")
    logs = out.get("server_logs", {})
    kinds = ("error_lines", "tracebacks", "worker_timeouts", "worker_kills", "worker_respawns", "shutdown_problems")
    log_text = "; ".join(
        f"{n}: " + ("clean" if not any(v["findings"][k] for k in kinds)
                    else ", ".join(f"{k}={v['findings'][k]}" for k in kinds if v["findings"][k]))
        for n, v in logs.items())
    whole_ok = all(p.get("whole", {}).get("verified") for p in (w, s))
    lines.append(f"Verification: whole downloads' SHA-256 {'equal to the plaintext' if whole_ok else 'NOT equal'}"
                 f" ({expected_short(out)}); "
                 f"problems: {'none' if not problems else '; '.join(problems[:6])}. Server logs: {log_text}.")
    for n, v in logs.items():
        for line in v["findings"]["samples"][:4]:
            lines.append(f"- {n}: `{line}`")
    return "\n".join(lines)


def bundle_table(bundle: dict, phases: dict, baseline_kib: int | None, size: int, ref_mean: float | None) -> list[str]:
    """The copy bundle's steps: time, footage MB/s against the reference,
    CPU and peak RSS of the process doing the work."""
    def rate(seconds) -> tuple[str, str]:
        if not seconds:
            return "—", "—"
        mb_per_s = size / seconds / 1e6
        return fmt(mb_per_s), (fmt(mb_per_s / ref_mean, 2) if ref_mean else "—")

    build, download = phases.get("bundle_build"), phases.get("bundle_download")
    finalize, verify, imports = bundle.get("finalize"), bundle.get("verify"), bundle.get("verify_imports")
    verifier = bundle.get("verifier", "sync.evidence.verify")
    if imports and imports["exit_code"] != 0:
        imports = None  # it could not even import: no footprint to subtract
    found = (build or {}).get("request") or {}
    zip_size = (found.get("bundle") or {}).get("size")
    lines = [f"Copy bundle of the whole recording (witness only; send_file has no equivalent): "
             f"{fmt(size)} bytes of footage, zip {fmt(zip_size)} bytes. MB/s of footage (10^6 bytes), "
             f"ratio to the one-core decrypt + SHA-256 reference of this run ({fmt(ref_mean)} MB/s); RSS in MiB, "
             f"growth of the worker over its baseline above ({mib(baseline_kib)}), of witness-verify over "
             f"`python -c \"import {verifier}\"` ({mib((imports or {}).get('peak_kib'))} peak); the peak of "
             f"a process: {(verify or finalize or {}).get('peak_method', '—')}:", "",
             "| step | done by | seconds | MB/s | ratio to reference | CPU s | peak RSS | growth | in step | result |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    if finalize:
        mbs, ratio = rate(finalize["seconds"])
        lines.append(f"| first manifest (`witness finalize-due`) | its own process, start-up included "
                     f"| {fmt(finalize['seconds'], 1)} | {mbs} | {ratio} | {fmt(finalize['cpu_s'], 1)} "
                     f"| {mib(finalize['peak_kib'])} | — | — | exit {finalize['exit_code']} |")
    if build:
        m = build["memory"]
        peak = m["peak_kib"] if m["peak_reset"] else m["sampled_max_kib"]
        result = (f"ready; waited {fmt(build.get('scheduler_wait_s'), 2)} s for the scheduler's tick"
                  if not build.get("problem") else build["problem"])
        mbs, ratio = rate(build.get("build_s"))
        lines.append(f"| bundle build (`built_at` → ready, server clock) | the worker's scheduler thread "
                     f"| {fmt(build.get('build_s'), 2)} | {mbs} | {ratio} | {fmt(m['worker_cpu_s'], 1)} "
                     f"| {mib(peak)} | {signed(None if peak is None or baseline_kib is None else peak - baseline_kib)} "
                     f"| {signed(None if peak is None or m['start_kib'] is None else peak - m['start_kib'])} "
                     f"| {result} |")
        mbs, ratio = rate(build.get("approval_to_ready_s"))
        lines.append(f"| approval → ready, as the lawyer sees it | polled every {POLL_INTERVAL_S:g} s "
                     f"({fmt(build.get('polls'))} polls) | {fmt(build.get('approval_to_ready_s'), 2)} | {mbs} "
                     f"| {ratio} | | | | | states seen: {', '.join(build.get('states_seen', [])) or '—'} |")
    if download:
        m = download["memory"]
        peak = m["peak_kib"] if m["peak_reset"] else m["sampled_max_kib"]
        zip_rate = fmt(download["bytes"] / download["seconds"] / 1e6) if download.get("seconds") else "—"
        result = ("SHA-256 and size equal to the request's `bundle`" if not download.get("problem")
                  else download["problem"])
        lines.append(f"| bundle download (`GET …/bundle`) | the worker, streaming the zip "
                     f"| {fmt(download.get('seconds'), 2)} | {zip_rate} of zip | — | {fmt(m['worker_cpu_s'], 1)} "
                     f"| {mib(peak)} | {signed(None if peak is None or baseline_kib is None else peak - baseline_kib)} "
                     f"| {signed(None if peak is None or m['start_kib'] is None else peak - m['start_kib'])} "
                     f"| {result} |")
    if verify:
        mbs, ratio = rate(verify["seconds"])
        growth = (verify["peak_kib"] - imports["peak_kib"]
                  if verify["peak_kib"] is not None and imports and imports["peak_kib"] is not None else None)
        lines.append(f"| `witness-verify` of the downloaded zip | its own process (`python -m {verifier}`), "
                     f"start-up included | {fmt(verify['seconds'], 1)} | {mbs} | {ratio} | {fmt(verify['cpu_s'], 1)} "
                     f"| {mib(verify['peak_kib'])} | {signed(growth)} | — "
                     f"| exit {verify['exit_code']}: {verify.get('last_line', '')[:80]} |")
    lines.append("")
    return lines


def expected_short(out: dict) -> str:
    return f"sha256 {out.get('plaintext_sha256', '')[:16]}…"


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Media streaming benchmark for Witness Sync (see module docstring).")
    p.add_argument("--size-mib", type=int, default=1024, help="footage size in MiB (default 1024 = 1 GiB)")
    p.add_argument("--chunk-kib", type=int, default=1024, help="plaintext chunk size in KiB (default 1024)")
    p.add_argument("--repetitions", type=int, default=6,
                   help="drained whole downloads per server for the throughput medians (default 6)")
    p.add_argument("--parallel", type=int, default=4,
                   help="concurrent whole downloads in the parallel phase; 0 or 1 skips it (default 4)")
    p.add_argument("--seeks", type=int, default=40, help="open-ended seeks after the first bytes=0- (default 40)")
    p.add_argument("--seek-read-mib", type=float, default=8.0,
                   help="a seek reads 1 MiB to this much, then abandons (default 8)")
    p.add_argument("--ranges", type=int, default=150, help="bounded random ranges (default 150)")
    p.add_argument("--suffixes", type=int, default=30, help="suffix ranges (default 30)")
    p.add_argument("--upload-connections", type=int, default=4)
    p.add_argument("--at-commit", metavar="REV",
                   help="serve this commit (git archive into the temporary folder) instead of the working tree")
    p.add_argument("--threads", type=int, help="WITNESS_THREADS for both servers (default: gunicorn.conf.py)")
    p.add_argument("--dir", help="make the temporary folder (data, keys, plaintext, logs) under this one "
                                 "(default: the system's, usually /tmp); it needs four times --size-mib free")
    p.add_argument("--seed", type=int, default=6, help="seed of the plaintext and of the request plan")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout per request, seconds")
    p.add_argument("--reference-seconds", type=float, default=1.5)
    p.add_argument("--json", dest="json_path", help="also write every number to this JSON file")
    p.add_argument("--max-total", type=float, default=600.0, help="hard cap on the whole benchmark, seconds")
    p.add_argument("--quick", action="store_true", help="smoke run: 128 MiB, 2 repetitions, fewer ranges")
    args = p.parse_args(argv)
    if args.quick:
        args.size_mib, args.repetitions, args.parallel = 128, 2, 2
        args.seeks, args.ranges, args.suffixes, args.reference_seconds = 8, 20, 5, 0.5
    if args.size_mib * 1024 % args.chunk_kib or args.chunk_kib < 1 or args.chunk_kib > 4096:
        p.error("--chunk-kib must divide --size-mib and be 1..4096 (the server's largest chunk is 4 MiB)")
    args.repetitions = max(1, min(args.repetitions, 50))
    args.parallel = max(0, min(args.parallel, 16))
    args.seeks, args.ranges, args.suffixes = (max(0, min(n, 5000)) for n in (args.seeks, args.ranges, args.suffixes))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="witness-media-bench-", dir=args.dir))
    log_dir = root / "logs"
    log_dir.mkdir()
    version_before = code_version()
    out: dict = {}
    try:
        out = run(args, root, log_dir)
    finally:
        for child in root.iterdir():
            if child != log_dir:
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink()
    version_after = code_version()
    if out.get("commit"):
        code = f"{out['commit']} (`--at-commit {args.at_commit}`: that commit's tree, not the working tree)"
    elif version_after[1] == version_before[1]:
        code = version_before[0] + " (working tree)"
    else:
        code = f"{version_before[0]} then {version_after[0]} (working tree; server code changed during the run)"
    meta = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(), "upload_connections": args.upload_connections, "code": code,
    }
    print(markdown(out, meta), flush=True)
    print(f"\nServer logs: {log_dir}", file=sys.stderr)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"meta": meta, "args": vars(args), **out}, indent=2, default=str))
    failed = [t for t, v in out.get("targets", {}).items()
              if not v["phases"].get("whole", {}).get("verified")
              or v["phases"].get("ranges", {}).get("problems") or v["phases"].get("parallel", {}).get("problems")
              or v["phases"].get("throughput", {}).get("problems")]
    if out.get("bundle", {}).get("problems"):
        failed.append("bundle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
