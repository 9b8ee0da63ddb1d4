"""`witness-cosigner` as a partner organisation runs it: a real process
(gunicorn, two workers) on 127.0.0.1, driven over HTTP with checkpoints of a
real log built here (crypto.tlog.merkle over a dict of stored hashes, signed
with an Ed25519 log key). Its clock is passed in: every cosignature must
carry exactly that time, so nothing here depends on the calendar."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto.tlog.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from crypto.tlog.cosignature import CosignatureVerifier, cosignature_time
from crypto.tlog.merkle import leaf_hash, prove_consistency, stored_hash_index, stored_hashes_for_leaf, tree_hash
from crypto.tlog.note import Ed25519Signer, Signature, parse_note, sign_note
from crypto.tlog.witness import AddCheckpoint, parse_conflict_body, parse_cosignatures_body

from ..support import PROJECT_ROOT, free_port

ORIGIN = "legal-aid.example.org/witness-sync/log"
WITNESS_NAME = "clinic.example.edu/witness"
CLOCK = 1_650_000_000  # the time the process is told it is
TEXT = "text/plain; charset=utf-8"


class Log:
    """A transparency log: RFC 9162 tree over stored hashes in a dict."""

    def __init__(self, origin: str, signer: Ed25519Signer, leaves: str = "entry") -> None:
        self.origin, self.signer, self.prefix = origin, signer, leaves
        self.hashes: dict[int, bytes] = {}
        self.size = 0

    def read(self, coordinates):
        return [self.hashes[stored_hash_index(level, index)] for level, index in coordinates]

    def grow(self, to: int) -> "Log":
        while self.size < to:
            leaf = leaf_hash(f"{self.prefix} {self.size}".encode())
            for stored in stored_hashes_for_leaf(self.size, leaf, self.read):
                self.hashes[stored_hash_index(stored.level, stored.index)] = stored.hash
            self.size += 1
        return self

    def root(self, size: int | None = None) -> bytes:
        return tree_hash(self.size if size is None else size, self.read)

    def checkpoint(self, size: int | None = None, signer=None) -> str:
        size = self.size if size is None else size
        return sign_checkpoint(Checkpoint(self.origin, size, self.root(size)), signer or self.signer)

    def proof(self, old: int, new: int | None = None) -> tuple[bytes, ...]:
        return tuple(prove_consistency(old, self.size if new is None else new, self.read)) if old else ()

    def request(self, old: int, size: int | None = None, proof=None) -> bytes:
        proof = self.proof(old, size) if proof is None else proof
        return AddCheckpoint(old, tuple(proof), self.checkpoint(size)).body()


def log_signer(name: str = ORIGIN) -> Ed25519Signer:
    return Ed25519Signer(name, Ed25519PrivateKey.generate())


class CosignerProcess:
    """`witness-cosigner serve` in a process group of its own, told its time."""

    def __init__(self, root: Path, logs: list[tuple[str, str]]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        logs_file = root / "logs.txt"
        logs_file.write_text("# origin vkey\n" + "".join(f"{origin} {vkey}\n" for origin, vkey in logs))
        self.env = {**os.environ, "WITNESS_COSIGNER_NAME": WITNESS_NAME,
                    "WITNESS_COSIGNER_DATA_DIR": str(root / "data"), "WITNESS_COSIGNER_KEYS_DIR": str(root / "keys"),
                    "WITNESS_COSIGNER_LOGS": str(logs_file), "WITNESS_COSIGNER_WORKERS": "2"}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "cosigner.log"
        self.process: subprocess.Popen | None = None

    def command(self, *args: str) -> list[str]:
        # The console script's main, with the clock passed in.
        program = ("import sys; from server.cosigner.serve import main; "
                   f"sys.exit(main(sys.argv[1:], clock=lambda: {CLOCK}))")
        return [sys.executable, "-c", program, *args]

    def vkey(self) -> str:
        done = subprocess.run(self.command("key"), cwd=PROJECT_ROOT, env=self.env, capture_output=True, text=True,
                              check=True, timeout=30)
        return done.stdout.strip()

    def start(self) -> "CosignerProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command("serve", "--bind", f"127.0.0.1:{self.port}"),
                                            cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cosigner exited at start-up:\n{self.log()}")
            try:
                if requests.get(self.url + "/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError(f"cosigner did not start:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL to gunicorn's master and workers at once, as a power cut."""
        if self.process:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # workers outliving the master too
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def add(self, body: bytes, session=requests) -> requests.Response:
        return session.post(self.url + "/add-checkpoint", data=body, timeout=10)


@pytest.fixture
def log():
    return Log(ORIGIN, log_signer())


@pytest.fixture
def cosigner(tmp_path, log):
    process = CosignerProcess(tmp_path / "cosigner", [(ORIGIN, log.signer.verifier.vkey)]).start()
    yield process
    process.kill()  # what is held must not depend on a clean stop


def cosigned(log: Log, size: int, answer: requests.Response, vkey: str):
    """The checkpoint with the witness's answer added, opened with only the
    witness's key, as a log or a lawyer would check it."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == TEXT
    lines = parse_cosignatures_body(answer.content)
    note = log.checkpoint(size).rstrip("\n") + "\n" + "".join(s.line() for s in lines)
    return open_checkpoint(note, log.origin, [CosignatureVerifier.from_vkey(vkey)])


def held_size(cosigner: CosignerProcess, log: Log) -> int:
    """The size the witness held, as a client learns it: a request from
    size 0 answers 409 with that size, or is cosigned if nothing was held."""
    answer = cosigner.add(AddCheckpoint(0, (), log.checkpoint()).body())
    if answer.status_code == 200:
        return 0
    assert answer.status_code == 409 and answer.headers["Content-Type"] == "text/x.tlog.size"
    return parse_conflict_body(answer.content)


def test_the_first_checkpoint_is_cosigned_from_old_size_0_at_the_time_given(cosigner, log):
    vkey = cosigner.vkey()
    assert vkey.startswith(f"{WITNESS_NAME}+")
    assert CosignatureVerifier.from_vkey(vkey).name == WITNESS_NAME  # a type 0x04 key: a cosigner's
    log.grow(5)

    opened = cosigned(log, 5, cosigner.add(log.request(0)), vkey)

    assert (opened.checkpoint.size, opened.checkpoint.root_hash) == (5, log.root())
    [witness_signature] = opened.note.verified
    assert witness_signature.name == WITNESS_NAME
    assert cosignature_time(witness_signature) == CLOCK


def test_a_grown_checkpoint_with_its_consistency_proof_is_cosigned_and_served_to_monitors(cosigner, log):
    vkey = cosigner.vkey()
    log.grow(3)
    assert cosigner.add(log.request(0)).status_code == 200
    log.grow(13)

    opened = cosigned(log, 13, cosigner.add(log.request(3)), vkey)

    assert opened.checkpoint.size == 13
    # tlog-witness's monitoring path: the held checkpoint with both the
    # log's signature and the witness's cosignature.
    origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
    served = requests.get(f"{cosigner.url}/{origin_hash}/checkpoint", timeout=5)
    assert served.status_code == 200 and served.headers["Content-Type"] == TEXT
    assert open_checkpoint(served.text, ORIGIN, [log.signer.verifier]).checkpoint.root_hash == log.root()
    assert open_checkpoint(served.text, ORIGIN, [CosignatureVerifier.from_vkey(vkey)]).checkpoint.size == 13
    assert requests.get(f"{cosigner.url}/{'0' * 64}/checkpoint", timeout=5).status_code == 404


def test_a_proof_that_does_not_verify_is_422_and_changes_nothing(cosigner, log):
    log.grow(6)
    assert cosigner.add(log.request(0)).status_code == 200
    log.grow(11)
    proof = list(log.proof(6))
    proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]

    for bad in (proof, proof[:-1], [], log.proof(6)[::-1]):
        answer = cosigner.add(log.request(6, proof=bad))
        assert answer.status_code == 422, bad
        assert answer.headers["Content-Type"] == TEXT and "does not verify" in answer.text

    assert held_size(cosigner, log) == 6
    assert cosigner.add(log.request(6)).status_code == 200


def test_a_stale_old_size_gets_409_with_the_size_held(cosigner, log):
    log.grow(4)
    assert cosigner.add(log.request(0)).status_code == 200
    log.grow(9)
    assert cosigner.add(log.request(4)).status_code == 200
    log.grow(12)

    for old in (4, 0, 10):
        answer = cosigner.add(log.request(old))
        assert answer.status_code == 409
        assert answer.headers["Content-Type"] == "text/x.tlog.size"
        assert answer.content == b"9\n"


def test_an_unknown_origin_is_404(cosigner):
    other = Log("another.example.org/log", log_signer("another.example.org/log")).grow(3)

    answer = cosigner.add(other.request(0))

    assert answer.status_code == 404
    assert answer.headers["Content-Type"] == TEXT and "no log with this origin" in answer.text


def test_a_checkpoint_the_log_did_not_sign_is_403(cosigner, log):
    log.grow(5)
    impostor = log_signer()  # the log's name, another key
    not_signed = AddCheckpoint(0, (), log.checkpoint(signer=impostor)).body()
    text, [signature] = parse_note(log.checkpoint())
    forged = Signature(signature.name, signature.key_id, bytes([signature.signature[0] ^ 1]) + signature.signature[1:])
    bad_signature = AddCheckpoint(0, (), text + "\n" + forged.line()).body()

    for body in (not_signed, bad_signature):
        answer = cosigner.add(body)
        assert answer.status_code == 403
        assert answer.headers["Content-Type"] == TEXT and "no valid signature" in answer.text
    assert held_size(cosigner, log) == 0


def test_a_split_view_at_the_held_size_is_refused_logged_and_kept_as_evidence(cosigner, log):
    log.grow(8)
    assert cosigner.add(log.request(0)).status_code == 200
    # The same log key signs another tree of the same size: what a server
    # shows the people it wants to deceive.
    fork = Log(ORIGIN, log.signer, leaves="rewritten entry").grow(8)
    assert fork.root() != log.root()

    answer = cosigner.add(fork.request(8))

    assert answer.status_code == 422
    assert answer.headers["Content-Type"] == TEXT and "split view" in answer.text
    assert "EQUIVOCATION" in cosigner.log() and ORIGIN in cosigner.log()
    [evidence] = (cosigner.root / "data" / "evidence").rglob("*.note")
    assert evidence.read_text() == fork.checkpoint()
    # Nothing changed: the held checkpoint is still the first tree's.
    assert cosigner.add(log.request(8)).status_code == 200
    log.grow(10)
    assert cosigner.add(log.request(8)).status_code == 200


def test_malformed_bodies_and_requests_are_400_in_plain_text(cosigner, log):
    log.grow(5)
    good = log.request(0).decode()
    root = base64.b64encode(log.root()).decode()
    bodies = [
        b"",
        b"hello\n",
        good.replace("old 0\n", "old 00\n").encode(),
        good.replace("old 0\n\n", "old 0\n").encode(),  # no empty line before the note
        good.replace("old 0\n", "old 0\nnot-a-hash\n").encode(),
        AddCheckpoint(0, (), sign_note(f"{ORIGIN}\n05\n{root}\n", log.signer)).body(),  # signed, but no checkpoint
        b"old 0\n\n" + f"{ORIGIN}\n5\n".encode(),  # a checkpoint without signatures
        b"\xff\xfe" + good.encode(),
        AddCheckpoint(6, (), log.checkpoint()).body(),  # an old size above the checkpoint's
    ]
    for body in bodies:
        answer = cosigner.add(body)
        assert answer.status_code == 400, body
        assert answer.headers["Content-Type"] == TEXT and "<html" not in answer.text.lower()

    # What gunicorn's own parser refuses is plain text too.
    with socket.create_connection(("127.0.0.1", cosigner.port), timeout=5) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        reply = raw.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400") and b"text/plain" in reply and b"<html" not in reply.lower()
    for method, path, status in (("GET", "/add-checkpoint", 405), ("GET", "/nothing/here/at/all", 404)):
        answer = requests.request(method, cosigner.url + path, timeout=5)
        assert answer.status_code == status and answer.headers["Content-Type"] == TEXT
        assert "<html" not in answer.text.lower()
    assert held_size(cosigner, log) == 0


def test_a_body_over_64_KiB_is_refused_before_it_is_read(cosigner, log):
    log.grow(2)
    big = log.request(0) + b"x" * (64 * 1024)

    answer = cosigner.add(big)

    assert answer.status_code == 413
    assert answer.headers["Content-Type"] == TEXT and "larger than 65536 bytes" in answer.text

    def chunked():
        yield log.request(0)
        for _ in range(70):
            yield b"y" * 1024

    answer = requests.post(cosigner.url + "/add-checkpoint", data=chunked(), timeout=10)
    assert answer.status_code == 413
    assert held_size(cosigner, log) == 0


def test_racing_requests_from_the_same_old_size_only_one_wins(cosigner, log):
    log.grow(4)
    assert cosigner.add(log.request(0)).status_code == 200
    log.grow(40)
    bodies = [log.request(4, size) for size in range(10, 40)]
    start = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def submit(body):
        session = requests.Session()
        start.wait()
        statuses.append(cosigner.add(body, session).status_code)

    threads = [threading.Thread(target=submit, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(statuses) == [200] + [409] * (len(bodies) - 1)
    winner = held_size(cosigner, log)
    assert 10 <= winner < 40


def test_a_cosigned_checkpoint_survives_kill_9_right_after_its_200(cosigner, log):
    vkey = cosigner.vkey()
    log.grow(7)
    assert cosigner.add(log.request(0)).status_code == 200
    log.grow(20)
    cosigned(log, 20, cosigner.add(log.request(7)), vkey)

    cosigner.kill()
    cosigner.start()

    replay = cosigner.add(log.request(7, 20))  # the older size again
    assert replay.status_code == 409 and replay.content == b"20\n"
    log.grow(21)
    assert cosigned(log, 21, cosigner.add(log.request(20)), vkey).checkpoint.size == 21
    assert cosigner.vkey() == vkey  # the same key after the restart


def test_no_client_address_is_written_to_the_log(cosigner, log):
    log.grow(3)
    session = requests.Session()
    for body in (log.request(0), b"junk", log.request(1)):
        cosigner.add(body, session)
    text = cosigner.log()
    assert "cosigned" in text  # the log is being written
    for line in text.splitlines():
        if "127.0.0.1" in line:
            assert f"127.0.0.1:{cosigner.port}" in line, line  # only its own address, at start-up
    for path in (cosigner.root / "data").rglob("*"):
        if path.is_file():
            assert b"127.0.0.1" not in path.read_bytes()


def test_a_bad_logs_file_stops_the_start_with_a_clear_reason(tmp_path):
    process = CosignerProcess(tmp_path / "bad", [(ORIGIN, "not-a-vkey")])

    done = subprocess.run(process.command("serve", "--bind", f"127.0.0.1:{process.port}"), cwd=PROJECT_ROOT,
                          env=process.env, capture_output=True, text=True, timeout=30)

    assert done.returncode == 2
    assert "line 2: not an Ed25519 vkey" in done.stderr
