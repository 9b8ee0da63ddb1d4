"""`Archive`: the one object that owns the records, the chunk files, the keys
and the clock. Domain functions (ingest, finalize, accounts, ...) take it as
their first argument; the HTTP layer makes one per app."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from crypto.keys import ServerKeys, load_or_create_server_keys

from .leader import LeaderLock, open_leader_lock
from .records import Records, open_records
from .records.group import GroupCommit
from .settings import Settings
from .storage import BlobStore, ChunkStore
from .storage.files import FileBlobStore, FileChunkStore
from .timefmt import format_time, utc_now

CHUNKS_FOLDER, BUNDLES_FOLDER = "chunks", "bundles"


class Archive:
    """Records (SQLite or PostgreSQL), chunk bytes (a `ChunkStore`), copy bundles (a
    `BlobStore`), server keys and clock."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        chunk_store: ChunkStore | None = None,
        blob_store: BlobStore | None = None,
        keys: ServerKeys | None = None,
    ):
        self.settings = settings
        self.clock = clock
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The TSA certificate, when made now, starts at this clock's time: the
        # tokens it signs are dated by the same clock.
        self.keys = keys or load_or_create_server_keys(settings.keys_dir, now=clock())
        # Chosen here, and only here, from the settings: SQLite in the data
        # folder, or PostgreSQL at WITNESS_DATABASE_URL. Migrated on open; a
        # newer schema is refused (SchemaTooNew).
        self.database: Records = open_records(settings.data_dir, settings.database_url)
        # Chunk acceptances of this process's threads share their commits
        # (records/group.py): one durable flush for all that arrive together.
        self.chunk_commits = GroupCommit(self.database)
        # Chosen here, and only here, from the settings (a test may hand in its own).
        if chunk_store is None or blob_store is None:
            chunks, blobs = open_stores(settings)
            chunk_store, blob_store = chunk_store or chunks, blob_store or blobs
        self.chunks: ChunkStore = chunk_store
        self.blobs: BlobStore = blob_store

    def now(self) -> str:
        """The clock's current time in wire format."""
        return format_time(self.clock())

    def leader_lock(self) -> LeaderLock:
        """A new handle on the lock whose holder runs the background jobs:
        beside PostgreSQL records, an advisory lock every node shares; else
        a `flock` in the data folder."""
        return open_leader_lock(self.settings.data_dir, self.settings.database_url)


def open_stores(settings: Settings) -> tuple[ChunkStore, BlobStore]:
    """The chunk and bundle stores `settings.chunk_store` names: files under
    the data folder (`chunks/`, `bundles/`) by default, or an S3 bucket.
    Raises `ValueError` for a malformed `s3://` address, and for S3 while
    chunk files are still in the data folder: the records would point at
    chunks the bucket lacks, and reconciliation would write them all off."""
    if settings.chunk_store is None:
        return (FileChunkStore(settings.data_dir / CHUNKS_FOLDER),
                FileBlobStore(settings.data_dir / BUNDLES_FOLDER))
    local = settings.data_dir / CHUNKS_FOLDER
    if local.is_dir() and any(entry.is_dir() and not entry.name.startswith(".") for entry in local.iterdir()):
        raise ValueError(f"WITNESS_CHUNK_STORE is {settings.chunk_store} but {local} still holds chunk files: "
                         "copy them into the bucket (under <prefix>chunks/) and move that folder away first, "
                         "or unset WITNESS_CHUNK_STORE")
    from .storage.s3 import open_s3_stores  # boto3 is loaded only when it is used

    return open_s3_stores(settings.chunk_store, endpoint_url=settings.s3_endpoint_url)
