"""Chunks and bundles on any S3-compatible object store, through boto3
(`WITNESS_CHUNK_STORE=s3://bucket/prefix`, `WITNESS_S3_ENDPOINT_URL` for a
service other than AWS; credentials from boto3's own chain: the standard
`AWS_*` variables, `~/.aws`, an instance role).

Layout under the prefix:

    chunks/<recording_id>/<name>      chunk bytes as received (names: index and hash)
    quarantine/<recording_id>/<name>.<ns>.<hex>   damaged chunks, kept for examination
    bundles/<name>                    copy bundles
    probes/<pid>-<hex>                readiness probes, removed at once

What an acknowledgement means here: the store answered the chunk's PUT with
200 before its row was committed. AWS S3 answers only once the object is
stored redundantly. SeaweedFS by default answers once its volume server has
written the bytes to the operating system (its page cache, and each
replica's), without fsync: a power cut of the store's machine can lose the
last chunks it acknowledged. An operator makes it durable per bucket with
`weed shell`: `fs.configure -locationPrefix=/buckets/<bucket>/ -fsync -apply`
(and `-replication=...` to survive the loss of a disk or machine);
docs/operations.md has the details.

Failures of the store (unreachable, timing out, refusing, a missing bucket,
wrong credentials) are `StoreUnavailable`, which the HTTP layer answers
503 with `Retry-After`; S3 writes are all-or-nothing, so nothing partial is
ever visible.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import StoreUnavailable
from . import StoredChunk, read_blocks

log = logging.getLogger("witness.s3")

# A multipart upload's parts (S3's minimum is 5 MiB): what a bundle upload
# holds in memory at once.
PART_BYTES = 8 * 1024 * 1024
# Bounded store calls: every call ends (answered or failed) within about
# two minutes, which the removal lease of sync/ingest.py relies on.
_CLIENT_CONFIG = dict(connect_timeout=5, read_timeout=30,
                      retries={"mode": "standard", "total_max_attempts": 3})
_ABSENT = {"404", "NoSuchKey", "NotFound"}


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (empty, or ending in "/")."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> "S3Location":
        """`s3://bucket` or `s3://bucket/some/prefix`; `ValueError` otherwise."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"WITNESS_CHUNK_STORE must look like s3://bucket/prefix, not {url!r}")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")


class S3Client:
    """One boto3 client per process (gunicorn forks workers; a client's
    connection pool must not be shared across a fork), made on first use."""

    def __init__(self, endpoint_url: str | None):
        self.endpoint_url = endpoint_url
        self._lock = threading.Lock()
        self._client, self._pid = None, None

    def __call__(self):
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    session = boto3.session.Session()
                    config = Config(**_CLIENT_CONFIG,
                                    s3={"addressing_style": "path"} if self.endpoint_url else {})
                    self._client = session.client("s3", endpoint_url=self.endpoint_url, config=config,
                                                  region_name=session.region_name or "us-east-1")
                    self._pid = os.getpid()
        return self._client


def open_s3_stores(url: str, *, endpoint_url: str | None = None) -> tuple["S3ChunkStore", "S3BlobStore"]:
    """The chunk and bundle stores of `WITNESS_CHUNK_STORE=url`, sharing one client."""
    location = S3Location.parse(url)
    client = S3Client(endpoint_url)
    return S3ChunkStore(client, location), S3BlobStore(client, location)


def _unavailable(exc: Exception, doing: str) -> StoreUnavailable:
    failure = StoreUnavailable("The server's storage cannot be reached right now; nothing was kept. Retry shortly.")
    failure.__cause__ = exc
    log.warning("object store failed while %s: %s", doing, exc)
    return failure


class _NameTaken(Exception):
    """A conditional put found the key already there."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _Body:
    """An object's body, read like a file; store failures mid-read are
    `StoreUnavailable`."""

    def __init__(self, body):
        self._body = body

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise _unavailable(exc, "reading an object") from exc

    def close(self) -> None:
        self._body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Objects:
    """What both stores do with keys under one prefix."""

    def __init__(self, client: S3Client, location: S3Location):
        self._client, self.bucket, self.prefix = client, location.bucket, location.prefix

    def _call(self, doing: str, method: str, **kwargs):
        try:
            return getattr(self._client(), method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = _code(exc)
            if code in _ABSENT and method in ("get_object", "head_object", "copy_object"):
                raise FileNotFoundError(kwargs["Key"]) from exc
            if code == "PreconditionFailed" and "IfNoneMatch" in kwargs:
                raise _NameTaken(kwargs["Key"]) from exc
            raise _unavailable(exc, doing) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc, doing) from exc

    def _get(self, key: str, **kwargs) -> BinaryIO:
        return _Body(self._call("reading an object", "get_object", Key=key, **kwargs)["Body"])

    def _head(self, key: str) -> dict | None:
        try:
            return self._call("asking for an object", "head_object", Key=key)
        except FileNotFoundError:
            return None

    def _delete(self, key: str) -> None:
        self._call("deleting an object", "delete_object", Key=key)

    def _list(self, prefix: str, **kwargs) -> Iterator[dict]:
        token = None
        while True:
            page = self._call("listing objects", "list_objects_v2", Prefix=prefix,
                              **({"ContinuationToken": token} if token else {}), **kwargs)
            yield page
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]


class S3ChunkStore(_Objects):
    """Chunks as objects `<prefix>chunks/<recording_id>/<name>`."""

    def _key(self, recording_id: str, name: str) -> str:
        return f"{self.prefix}chunks/{recording_id}/{name}"

    def put(self, recording_id: str, name: str, data: bytes) -> None:
        key = self._key(recording_id, name)
        try:
            self._call("storing a chunk", "put_object", Key=key, Body=data, IfNoneMatch="*")
            return
        except _NameTaken:
            pass
        # The name is taken: by these same bytes (the name is their hash), a
        # retry, which is success. Anything else under it is damage (a
        # single-part object's ETag is its MD5 on AWS and SeaweedFS): the
        # bytes that match the name replace it.
        held = self._head(key)
        if held is not None and held.get("ETag", "").strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest():
            return
        log.warning("chunk object %s held other bytes than its name says; stored again", key)
        self._call("storing a chunk", "put_object", Key=key, Body=data)

    def open(self, recording_id: str, name: str) -> BinaryIO:
        return self._get(self._key(recording_id, name))

    def stat(self, recording_id: str, name: str) -> StoredChunk | None:
        held = self._head(self._key(recording_id, name))
        if held is None:
            return None
        return StoredChunk(name, held["ContentLength"], held["LastModified"].timestamp())

    def delete(self, recording_id: str, name: str) -> None:
        self._delete(self._key(recording_id, name))

    def quarantine(self, recording_id: str, name: str) -> None:
        source = self._key(recording_id, name)
        target = f"{self.prefix}quarantine/{recording_id}/{name}.{time.time_ns()}.{secrets.token_hex(4)}"
        try:
            self._call("quarantining a chunk", "copy_object", Key=target,
                       CopySource={"Bucket": self.bucket, "Key": source})
        except FileNotFoundError:
            return
        self._delete(source)

    def probe(self) -> None:
        key = f"{self.prefix}probes/{os.getpid()}-{secrets.token_hex(6)}"
        self._call("probing the store", "put_object", Key=key, Body=b"probe")
        self._delete(key)

    # -- ChunkListing

    def recording_ids(self) -> Iterator[str]:
        base = f"{self.prefix}chunks/"
        for page in self._list(base, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"][len(base):].rstrip("/")

    def list_chunks(self, recording_id: str) -> list[StoredChunk]:
        base = f"{self.prefix}chunks/{recording_id}/"
        return [StoredChunk(item["Key"][len(base):], item["Size"], item["LastModified"].timestamp())
                for page in self._list(base) for item in page.get("Contents", [])
                if "/" not in item["Key"][len(base):]]


class S3BlobStore(_Objects):
    """Blobs as objects `<prefix>bundles/<name>`, uploaded in parts of about
    `PART_BYTES` (one part in memory at a time)."""

    def _key(self, name: str) -> str:
        return f"{self.prefix}bundles/{name}"

    def put(self, name: str, blocks: Iterable[bytes]) -> int:
        # Blocks are gathered until they make a part (parts may differ in
        # size; all but the last must be at least 5 MiB), joined once, sent.
        key, pending, pending_bytes, size = self._key(name), [], 0, 0
        upload_id, parts = None, []
        try:
            for block in blocks:
                size += len(block)
                pending.append(bytes(block))
                pending_bytes += len(block)
                if pending_bytes >= PART_BYTES:
                    if upload_id is None:
                        upload_id = self._call("starting an upload", "create_multipart_upload", Key=key)["UploadId"]
                    body = b"".join(pending)
                    pending.clear()
                    pending_bytes = 0
                    parts.append(self._upload_part(key, upload_id, len(parts) + 1, body))
                    del body
            if upload_id is None:
                self._call("storing a blob", "put_object", Key=key, Body=b"".join(pending))
                return size
            if pending:
                parts.append(self._upload_part(key, upload_id, len(parts) + 1, b"".join(pending)))
            self._call("finishing an upload", "complete_multipart_upload", Key=key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
            upload_id = None
            return size
        finally:
            if upload_id is not None:
                self._abort(key, upload_id)

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> dict:
        answer = self._call("uploading a part", "upload_part", Key=key, UploadId=upload_id, PartNumber=number,
                            Body=data)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._call("abandoning an upload", "abort_multipart_upload", Key=key, UploadId=upload_id)
        except StoreUnavailable:
            pass  # remove_unfinished (at the next leader's take-over) tries again

    def put_file(self, name: str, path: Path) -> int:
        size = self.put(name, read_blocks(open(path, "rb")))
        Path(path).unlink()
        return size

    def open(self, name: str, start: int = 0, end: int | None = None) -> BinaryIO:
        if start == 0 and end is None:  # the whole blob (a range would be refused on an empty one)
            return self._get(self._key(name))
        return self._get(self._key(name), Range=f"bytes={start}-{'' if end is None else end}")

    def size(self, name: str) -> int | None:
        held = self._head(self._key(name))
        return None if held is None else held["ContentLength"]

    def delete(self, name: str) -> None:
        self._delete(self._key(name))

    def remove_unfinished(self) -> int:
        base, removed, markers = f"{self.prefix}bundles/", 0, {}
        while True:
            answer = self._call("listing unfinished uploads", "list_multipart_uploads", Prefix=base, **markers)
            for upload in answer.get("Uploads", []):
                self._abort(upload["Key"], upload["UploadId"])
                removed += 1
            if not answer.get("IsTruncated"):
                return removed
            markers = {"KeyMarker": answer["NextKeyMarker"], "UploadIdMarker": answer["NextUploadIdMarker"]}
