"""Numbered schema migrations, one folder per backend.

`NNNN_<what>.sql` brings a database at version NNNN-1 to version NNNN.
`NNNN_baseline.sql` makes the whole version-NNNN schema in an empty
database, so a new one is made in one step rather than by replaying history.
Versions are shared by the backends: version N means the same tables and
columns in `sqlite/` and `postgres/`, and every backend has a file for every
version above its first baseline. The version lives in the `meta` table
(`schema_version`), as it did before migrations were numbered; SQLite files
of versions 1 to 3 (before numbering) are brought to version 4 by
`sync.records.sqlite`'s legacy upgrade, then go on from here.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def baseline(self) -> bool:
        return self.name == "baseline"

    def statements(self) -> list[str]:
        """The file's statements, one by one (a driver's multi-statement
        call would commit on its own in SQLite)."""
        return split_statements(self.path.read_text())


def migrations(backend: str) -> list[Migration]:
    """Every migration file of a backend ("sqlite" or "postgres"), by version."""
    found = []
    for path in sorted((HERE / backend).glob("*.sql")):
        match = _NAME.fullmatch(path.name)
        if match is None:
            raise RuntimeError(f"{path}: a migration is named NNNN_<what>.sql")
        found.append(Migration(int(match[1]), match[2], path))
    return found


def latest_version(backend: str) -> int:
    """The newest schema version this release knows for the backend."""
    return max(m.version for m in migrations(backend))


def plan(backend: str, current: int | None) -> list[Migration]:
    """What to apply to a database at version `current` (None: empty): the
    newest baseline and every upgrade after it, or the upgrades after
    `current`. A `current` newer than this release is the caller's to refuse."""
    every = migrations(backend)
    if current is None:
        base = max(m.version for m in every if m.baseline)
        return [m for m in every if m.version == base and m.baseline] + \
               [m for m in every if m.version > base and not m.baseline]
    return [m for m in every if m.version > current and not m.baseline]


def split_statements(text: str) -> list[str]:
    """SQL text cut into statements at the semicolons that end them (not
    those inside quotes or comments)."""
    statements, pending = [], ""
    for line in text.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statement = _strip_comments(pending).strip()
            if statement:
                statements.append(statement)
            pending = ""
    if _strip_comments(pending).strip():
        raise RuntimeError(f"an unfinished statement at the end of a migration: {pending[:80]!r}")
    return statements


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
