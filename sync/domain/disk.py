"""Free disk space and the watermark below which new recordings are refused
(`WITNESS_MIN_FREE_BYTES`), so that what space is left goes to recordings
already started: a witness mid-encounter is never cut off for a new one."""

from __future__ import annotations

import shutil

from ..archive import Archive
from ..storage import LocalChunkDisk


def disk_free_bytes(archive: Archive) -> int:
    """Free bytes on the emptiest disk the server writes to: the records'
    folder, and the chunk store's when it has a disk of its own."""
    free = shutil.disk_usage(archive.settings.data_dir).free
    store_free = archive.chunks.free_bytes() if isinstance(archive.chunks, LocalChunkDisk) else None
    return free if store_free is None else min(free, store_free)


def below_watermark(archive: Archive) -> bool:
    """True when free disk is below `min_free_bytes`."""
    return disk_free_bytes(archive) < archive.settings.min_free_bytes
