"""Test support: a real server process, a phone speaking raw HTTP, and
staff made through the real CLI. Used by the end-to-end tests."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jwt as pyjwt
import requests
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from crypto.aead import encrypt_chunk, new_content_key, seal_content_key

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FPS = 25  # frames per second of the test videos


def make_fragmented_mp4(path: Path, seconds: int) -> Path:
    """Test pattern and tone, H.264 with a keyframe every second, fragmented
    so that any prefix cut at a fragment boundary decodes (FIELD-NOTES.md)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0",
         "-c:a", "aac", "-movflags", "frag_keyframe+empty_moov+default_base_moof", str(path)],
        check=True,
    )
    return path


def decoded_seconds(path: Path) -> float:
    """Seconds of video that actually decode: frames counted, not the exit
    code (ffprobe exits 0 on a truncated file)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
                          "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    return int(out) / FPS




def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# For a server whose tests log in afresh hundreds of times within seconds
# from one address (the permission matrices): nginx's login and staff
# limits (2 logins a second past a burst of 20; test_front_door.py and the
# attack test exercise them) would answer 429 on a fast run. What those
# tests check is not the limit.
MANY_LOGINS = {"WITNESS_LIMIT_LOGIN_BURST": 100000, "WITNESS_LIMIT_STAFF_BURST": 100000}

_DATABASES: dict[str, str] = {}  # server root -> its PostgreSQL database (WITNESS_TEST_RECORDS)
_STORES: dict[str, str] = {}  # server root -> its s3:// location (WITNESS_TEST_CHUNKS)


class ServerProcess:
    """The server as `scripts/serve` runs it, on 127.0.0.1 with its own data
    and keys folders: `witness-serve`, nginx in front of two gunicorn pools
    (`workers` each). With `front_door=False`, plain `gunicorn wsgi:app`
    alone (for what only gunicorn itself can be asked). Either can be killed
    with SIGKILL (every process of it at once) and started again."""

    def __init__(self, root: Path, *, workers: int = 2, idle_seconds: float = 2.0, front_door: bool = True, **env):
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.keys_dir = self.root / "keys"
        self.workers = workers
        self.front_door = front_door
        # Unix socket paths are limited to 108 bytes: a short folder of its own.
        self.run_dir = Path(tempfile.mkdtemp(prefix="wrun-"))
        self.env = {
            **os.environ,
            "WITNESS_DATA_DIR": str(self.data_dir),
            "WITNESS_KEYS_DIR": str(self.keys_dir),
            "WITNESS_IDLE_FINALIZE_SECONDS": str(idle_seconds),
            "WITNESS_SCHEDULER_INTERVAL_SECONDS": "0.2",
            # The operator default (1 GiB free) would make every test depend on
            # the machine's disk; the watermark tests set their own.
            "WITNESS_MIN_FREE_BYTES": str(16 * 1024 * 1024),
            **{k: str(v) for k, v in env.items()},
        }
        # WITNESS_TEST_RECORDS=postgresql: the records of every server on a
        # database of its own in one throwaway PostgreSQL cluster (scripts/test
        # runs some e2e modules so; see there).
        # A server made again on the same root (a restart) finds its records.
        if os.environ.get("WITNESS_TEST_RECORDS") == "postgresql" and "WITNESS_DATABASE_URL" not in env:
            from .postgres import shared_cluster

            root_key = str(self.root.resolve())
            if root_key not in _DATABASES:
                _DATABASES[root_key] = shared_cluster().new_database()
            self.env["WITNESS_DATABASE_URL"] = _DATABASES[root_key]
        # WITNESS_TEST_CHUNKS=s3: the chunks and bundles of every server under
        # a prefix of its own in one bucket of one throwaway SeaweedFS.
        if os.environ.get("WITNESS_TEST_CHUNKS") == "s3" and "WITNESS_CHUNK_STORE" not in env:
            from .services import SHARED_BUCKET, shared_seaweedfs

            root_key = str(self.root.resolve())
            if root_key not in _STORES:
                _STORES[root_key] = f"s3://{SHARED_BUCKET}/{uuid.uuid4().hex}"
            self.env.update(shared_seaweedfs().env(_STORES[root_key]))
        # What the test set itself wins over the front door's test defaults.
        self._env_overrides = {k: str(v) for k, v in env.items()}
        self.process: subprocess.Popen | None = None
        self.port = free_port()
        # With WITNESS_TLS_CERT the front door speaks HTTPS; that
        # certificate is also what a client trusts.
        self.tls_cert = env.get("WITNESS_TLS_CERT")
        self.url = f"{'https' if self.tls_cert else 'http'}://127.0.0.1:{self.port}"
        self.log_path = self.root / "server.log"

    def start(self) -> "ServerProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        if self.front_door:
            command = [sys.executable, "-m", "server.frontdoor"]
            env = {**self.env, "WITNESS_BIND": f"127.0.0.1:{self.port}", "WITNESS_RUN_DIR": str(self.run_dir),
                   "WITNESS_WORKERS": str(self.workers), "WITNESS_THREADS": "4",
                   "WITNESS_STAFF_WORKERS": str(self.workers), "WITNESS_STAFF_THREADS": "4", **self._env_overrides}
        else:
            command = [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{self.port}",
                       "--workers", str(self.workers), "--threads", "4"]
            env = self.env
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start-up:\n{self.log()}")
            try:
                if self.env.get("WITNESS_PROXY_PROTOCOL_FROM") and self.front_door:
                    # Every connection must open with a PROXY header, as a balancer's would.
                    if proxied_request(self, "127.0.0.1", "GET /v1/keys HTTP/1.1\r\nHost: witness\r\n"
                                                         "Connection: close\r\n\r\n")[0] == 200:
                        return self
                elif requests.get(self.url + "/v1/keys", timeout=1,
                                  verify=str(self.tls_cert) if self.tls_cert else True).status_code == 200:
                    return self
            except (requests.RequestException, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the whole process group (nginx, both pools, every worker),
        no cleanup, as a power cut would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._reap_group()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _reap_group(self) -> None:
        # Workers outliving their parent (nginx's, gunicorn's) share its group.
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def database_url(self) -> str | None:
        """The PostgreSQL database of this server's records, or None (SQLite)."""
        return self.env.get("WITNESS_DATABASE_URL")

    @property
    def _s3(self):
        """(client, bucket, prefix) of this server's S3 chunk store, or None (files)."""
        url = self.env.get("WITNESS_CHUNK_STORE")
        if not url:
            return None
        import boto3
        from botocore.config import Config

        from .services import S3_TEST_ENV

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        client = boto3.session.Session(aws_access_key_id=S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
                                       aws_secret_access_key=S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
                                       region_name="us-east-1").client(
            "s3", endpoint_url=self.env["WITNESS_S3_ENDPOINT_URL"], config=Config(s3={"addressing_style": "path"}))
        return client, bucket, f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    def held_chunks(self, recording_id: str, *, area: str = "chunks") -> dict[str, bytes]:
        """Everything the chunk store holds for a recording (temporary files
        included), by name, with its bytes, on files or S3 alike; `area=
        "quarantine"` for what was set apart as damaged."""
        s3 = self._s3
        if s3 is None:
            folder = self.data_dir / "chunks" / (".quarantine" if area == "quarantine" else "") / recording_id
            return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}
        client, bucket, prefix = s3
        base, found = f"{prefix}{area}/{recording_id}/", {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for item in page.get("Contents", []):
                found[item["Key"][len(base):]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return dict(sorted(found.items()))

    def overwrite_held_chunk(self, recording_id: str, name: str, data: bytes) -> None:
        """Change a stored chunk's bytes behind the server's back (damage)."""
        s3 = self._s3
        if s3 is None:
            (self.data_dir / "chunks" / recording_id / name).write_bytes(data)
        else:
            client, bucket, prefix = s3
            client.put_object(Bucket=bucket, Key=f"{prefix}chunks/{recording_id}/{name}", Body=data)

    def query(self, sql: str, params=()) -> list[dict]:
        """Rows of a read of this server's records, from the test, whichever
        adapter holds them (the server may be running or stopped)."""
        records = self._records()
        try:
            return records.query(sql, params)
        finally:
            records.close()

    def execute(self, sql: str, params=()) -> int:
        """Change this server's records behind its back (a tamperer's edit);
        how many rows changed."""
        records = self._records()
        try:
            with records.transaction() as db:
                return db.execute(sql, params).rowcount
        finally:
            records.close()

    def _records(self):
        from sync.records import open_records

        return open_records(self.data_dir, self.database_url)

    def cli(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
        """Run `flask --app wsgi witness ...` against this server's folders."""
        env = dict(self.env)
        if password is not None:
            env["WITNESS_PASSWORD"] = password
        return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "witness", *args],
                              cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)

    def staff_token(self, username: str, role: str) -> str:
        """Create a staff user through the CLI (if new) and log in over HTTP."""
        password = f"pw-{username}-correct-horse"
        self.cli("create-user", username, "--role", role, password=password)
        answer = requests.post(self.url + "/v1/auth/login", json={"username": username, "password": password})
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def forged_token(self, subject: str, role: str, *, expires_in: float, kind: str = "access", **claims) -> str:
        """A token signed with this server's real token secret (read from its
        keys folder), for answers a test cannot otherwise reach in its time,
        such as an expired token."""
        secret = base64.b64decode((self.keys_dir / "token-secret").read_bytes().strip())
        now = int(time.time())
        payload = {"sub": subject, "role": role, "type": kind, "fresh": False, "jti": str(uuid.uuid4()),
                   "iat": now - 3600, "nbf": now - 3600, "exp": now + int(expires_in), **claims}
        return pyjwt.encode(payload, secret, algorithm="HS256")

    def wait_for(self, condition, timeout: float = 30.0, interval: float = 0.1):
        """Poll `condition()` until it returns something truthy."""
        return wait_until(condition, f"condition; server log:\n{self.log()[-4000:]}", timeout, interval)


def wait_until(condition, what: str, timeout: float, interval: float = 0.1):
    """Poll `condition()` until it returns something truthy (returned);
    AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not met within {timeout} s")


def proxied_request(server: ServerProcess, client: str, request: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send one HTTP/1.1 request (`request`: its head, ending in a blank
    line) as a TCP balancer would, after a PROXY protocol v1 header claiming
    the phone's address is `client`; returns (status, body). Raises OSError
    if the server closes the connection without an answer."""
    family = "TCP6" if ":" in client else "TCP4"
    local = "::1" if ":" in client else "127.0.0.1"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"PROXY {family} {client} {local} 40000 {server.port}\r\n".encode() + request.encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer:
        raise ConnectionResetError("the server closed the connection without answering")
    head, _, rest = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def content_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


class Phone:
    """A device speaking the protocol with raw requests, so tests can also
    send what a correct client never would."""

    def __init__(self, server: ServerProcess, *, http=None, keys: dict | None = None, **register):
        self.server = server
        # `http`: a requests.Session (e.g. one from another source address);
        # `keys`: /v1/keys as already fetched, to skip asking again.
        self.http = http or requests
        answer = self.http.post(server.url + "/v1/devices", json=register)
        assert answer.status_code == 201, answer.text
        self.device_id = answer.json()["device_id"]
        self.token = answer.json()["access_token"]
        self.refresh_token = answer.json()["refresh_token"]
        self.keys = keys or self.http.get(server.url + "/v1/keys").json()

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def recording_body(self, recording_id: str | None = None, content_key: bytes | None = None) -> tuple[dict, bytes]:
        recording_id = recording_id or str(uuid.uuid4())
        content_key = content_key or new_content_key()
        public = X25519PublicKey.from_public_bytes(
            base64.urlsafe_b64decode(self.keys["hpke"]["public_key"] + "=="))
        body = {
            "recording_id": recording_id,
            "content_type": "video/mp4",
            "started_at": "2026-11-21T14:03:07.123Z",
            "key_id": self.keys["hpke"]["key_id"],
            "sealed_key": b64url(seal_content_key(public, recording_id, content_key)),
        }
        return body, content_key

    def create_recording(self) -> "Recording":
        body, key = self.recording_body()
        answer = self.http.post(self.server.url + "/v1/recordings", json=body, headers=self.auth)
        assert answer.status_code == 201, answer.text
        return Recording(self, body["recording_id"], key)


class Recording:
    """One recording of a `Phone`, with helpers to build and send chunks."""

    def __init__(self, phone: Phone, recording_id: str, content_key: bytes):
        self.phone, self.id, self.key = phone, recording_id, content_key

    def chunk(self, index: int, plaintext: bytes | None = None, *, final: bool = False) -> bytes:
        plaintext = plaintext if plaintext is not None else f"piece {index} ".encode() * 50
        return encrypt_chunk(self.key, self.id, index, plaintext, final=final)

    def put(self, index: int, body: bytes, *, final: bool = False, digest: str | None = None,
            headers: dict | None = None, token: str | None = None) -> requests.Response:
        sent = {
            "Authorization": f"Bearer {token or self.phone.token}",
            "Content-Type": "application/octet-stream",
            "Content-Digest": digest if digest is not None else content_digest(body),
        }
        if final:
            sent["Witness-Final"] = "?1"
        sent.update(headers or {})
        return self.phone.http.put(f"{self.phone.server.url}/v1/recordings/{self.id}/chunks/{index}",
                                   data=body, headers=sent)

    def status(self, token: str | None = None) -> requests.Response:
        return self.phone.http.get(f"{self.phone.server.url}/v1/recordings/{self.id}/status",
                            headers={"Authorization": f"Bearer {token or self.phone.token}"})


class Staff:
    """A staff account: made through the CLI (with `organisation`) or over
    the API by a custodian (`made_by`, a custodian's access token)."""

    def __init__(self, server: ServerProcess, username: str, role: str, *, organisation: str = "default",
                 made_by: str | None = None):
        self.server, self.username, self.role = server, username, role
        self.password = f"pw-{username}-correct-horse"
        if made_by is None:
            made = server.cli("create-user", username, "--role", role, "--organisation", organisation,
                              password=self.password)
            assert made.returncode == 0, made.stderr
        else:
            answer = requests.post(server.url + "/v1/staff", headers={"Authorization": f"Bearer {made_by}"},
                                   json={"username": username, "role": role, "password": self.password})
            assert answer.status_code == 201, answer.text
        self.tokens = self.login()
        self.id = self.me()["id"]

    def login(self, **extra) -> dict:
        """A new session: {"access_token", "refresh_token"}."""
        answer = requests.post(self.server.url + "/v1/auth/login",
                               json={"username": self.username, "password": self.password, **extra})
        assert answer.status_code == 200, answer.text
        return answer.json()

    @property
    def token(self) -> str:
        return self.tokens["access_token"]

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def me(self) -> dict:
        answer = requests.get(self.server.url + "/v1/auth/me", headers=self.auth)
        assert answer.status_code == 200, answer.text
        return answer.json()


def openssl_ts_verify(folder: Path, data: bytes, response: bytes, chain_pem: str) -> subprocess.CompletedProcess:
    """`openssl ts -verify -data manifest.json -in manifest.tsr -CAfile
    tsa-chain.pem`, exactly as a lawyer would run it, in `folder`."""
    (folder / "manifest.json").write_bytes(data)
    (folder / "manifest.tsr").write_bytes(response)
    (folder / "tsa-chain.pem").write_text(chain_pem)
    return subprocess.run(["openssl", "ts", "-verify", "-data", "manifest.json", "-in", "manifest.tsr",
                           "-CAfile", "tsa-chain.pem"], cwd=folder, capture_output=True, text=True)
