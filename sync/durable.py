"""fsync of a file or a folder by path: what every durable write here
ends with (the file stores, the records' backups, the archive backups)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path, *, directory: bool = False) -> None:
    """Flush `path` (a file, or with `directory` a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
