"""`Archive`: the one object that owns the records, the chunk files, the keys
and the clock. Domain functions (ingest, finalize, accounts, ...) take it as
their first argument; the HTTP layer makes one per app."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from crypto.keys import ServerKeys, load_or_create_server_keys

from .database import Database
from .settings import Settings
from .storage import ChunkStore, FileChunkStore
from .timefmt import format_time, utc_now


class Archive:
    """Records (SQLite), chunk bytes (a `ChunkStore`), server keys and clock."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        chunk_store: ChunkStore | None = None,
        keys: ServerKeys | None = None,
    ):
        self.settings = settings
        self.clock = clock
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The TSA certificate, when made now, starts at this clock's time: the
        # tokens it signs are dated by the same clock.
        self.keys = keys or load_or_create_server_keys(settings.keys_dir, now=clock())
        self.database = Database(settings.data_dir / "witness.sqlite3")
        self.chunks = chunk_store or FileChunkStore(settings.data_dir / "chunks")

    def now(self) -> str:
        """The clock's current time in wire format."""
        return format_time(self.clock())
