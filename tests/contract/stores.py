"""Every adapter of the chunk and blob ports, for their contract suites
(imported by them as fixtures): local files on a temporary folder, and S3 on
the session's real SeaweedFS (a prefix of its own per test). `stores` also
knows how to look behind each adapter's back (what a test needs and no
caller may do: damage an object, find quarantined bytes and leftovers)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from sync.storage import TEMP_PREFIX
from sync.storage.files import FileBlobStore, FileChunkStore
from sync.storage.s3 import S3Location, open_s3_stores

from ..services import S3_TEST_ENV

ADAPTERS = ["files", "s3"]
CONTRACT_BUCKET = "witness-contract"


@dataclass
class Stores:
    """A chunk store and a blob store of one adapter, and a look behind them."""

    kind: str
    chunks: object
    blobs: object
    quarantined: Callable[[str], list[bytes]]  # recording id -> bytes kept apart
    overwrite: Callable[[str, str, bytes], None]  # (recording id, name, bytes) written around the adapter
    leftovers: Callable[[], list[str]]  # unfinished writes anywhere


@pytest.fixture
def s3_credentials(monkeypatch):
    for name, value in S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def contract_bucket(seaweedfs) -> str:
    return seaweedfs.bucket(CONTRACT_BUCKET)


def file_stores(root: Path) -> Stores:
    chunks, blobs = FileChunkStore(root / "chunks"), FileBlobStore(root / "bundles")
    return Stores(
        "files", chunks, blobs,
        quarantined=lambda rid: [p.read_bytes() for p in sorted((chunks.root / ".quarantine" / rid).glob("*"))],
        overwrite=lambda rid, name, data: (chunks.root / rid / name).write_bytes(data),
        leftovers=lambda: [str(p) for p in root.rglob(f"{TEMP_PREFIX}*")],
    )


def s3_stores(seaweedfs, bucket: str, url: str) -> Stores:
    chunks, blobs = open_s3_stores(url, endpoint_url=seaweedfs.endpoint_url)
    prefix = S3Location.parse(url).prefix
    client = seaweedfs.client()

    def leftovers():
        answer = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return [upload["Key"] for upload in answer.get("Uploads", [])]

    return Stores(
        "s3", chunks, blobs,
        quarantined=lambda rid: list(seaweedfs.objects(bucket, f"{prefix}quarantine/{rid}/").values()),
        overwrite=lambda rid, name, data: client.put_object(Bucket=bucket, Key=f"{prefix}chunks/{rid}/{name}",
                                                            Body=data),
        leftovers=leftovers,
    )


@pytest.fixture(params=ADAPTERS)
def stores(request, tmp_path) -> Stores:
    if request.param == "files":
        return file_stores(tmp_path)
    request.getfixturevalue("s3_credentials")
    seaweedfs = request.getfixturevalue("seaweedfs")
    bucket = request.getfixturevalue("contract_bucket")
    return s3_stores(seaweedfs, bucket, f"s3://{bucket}/{uuid.uuid4()}")
