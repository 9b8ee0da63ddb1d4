"""Typed rows: what the records port returns for each table.

One frozen dataclass per table, its fields the table's columns in the
schema's order (`migrations/`). A read names the kind it expects:

    recording = db.fetch_one(Recording, "SELECT * FROM recordings WHERE id = ?", [rid])
    chunks = db.fetch(Chunk, "SELECT * FROM chunks WHERE recording_id = ? ORDER BY idx", [rid])

`of(mapping)` takes the kind's columns from a row (a join or a `SELECT *`
may carry more; a missing column is an error: the query did not select
what the kind holds) and gives BLOB columns as `bytes` on every adapter
(psycopg hands out `memoryview`). Rows are values: a changed row is
`dataclasses.replace(row, state=...)`, written back by the domain's own
UPDATE. Audit entries stay mappings: their fields and hash are an
evidence format (`sync/evidence/custody.py`) that reads them by key.
Projections and aggregates (`SELECT COUNT(*) ...`, one column of
a row) stay plain `query`/`one` dicts: a type per ad hoc shape would say
less than the SQL beside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, TypeVar

R = TypeVar("R", bound="Row")


class Row:
    """The base of every typed row (see the module docstring)."""

    __slots__ = ()
    _columns: ClassVar[tuple[str, ...]] = ()
    _blobs: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def of(cls: type[R], row: Mapping[str, Any]) -> R:
        if not cls._columns:
            fields = dataclasses.fields(cls)
            cls._columns = tuple(f.name for f in fields)
            cls._blobs = frozenset(f.name for f in fields if "bytes" in str(f.type))
        values = {}
        for name in cls._columns:
            value = row[name]
            if name in cls._blobs and value is not None and not isinstance(value, bytes):
                value = bytes(value)
            values[name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The row as a dict keyed by column (for JSON answers and writes)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class Organisation(Row):
    id: int
    slug: str
    name: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Device(Row):
    id: str
    organisation_id: int | None
    created_at: str
    public_key_pem: str | None
    enrollment_code: str | None
    revoked_at: str | None
    revoked_by: str | None


@dataclass(frozen=True, slots=True)
class Staff(Row):
    id: int
    organisation_id: int | None
    username: str
    role: str
    password_hash: str
    created_at: str
    disabled_at: str | None
    session_generation: int | None
    totp_secret: bytes | None
    totp_enabled_at: str | None
    totp_last_step: int | None


@dataclass(frozen=True, slots=True)
class EnrollmentCode(Row):
    code: str
    organisation_id: int | None
    created_at: str
    note: str | None
    created_by: str | None
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class Recording(Row):
    id: str
    organisation_id: int | None
    device_id: str
    content_type: str
    started_at: str
    key_id: str
    sealed_key: bytes
    created_at: str
    state: str
    final_index: int | None
    complete_requested_at: str | None
    first_received_at: str | None
    last_received_at: str | None
    last_activity_at: str
    generation: int
    finalized_generation: int | None
    manifest_version: int | None
    chunk_count: int | None
    max_index: int | None
    footage_size: int | None


@dataclass(frozen=True, slots=True)
class Chunk(Row):
    recording_id: str
    idx: int
    final: int
    size: int
    sha256: str
    ciphertext_size: int
    ciphertext_sha256: str
    received_at: str
    captured_at: str | None
    device_signature: str | None
    log_index: int | None  # its `chunk.received` entry's leaf in the transparency log (schema 6 on)


@dataclass(frozen=True, slots=True)
class Manifest(Row):
    recording_id: str
    version: int
    state: str
    body: bytes
    sha256: str
    signature: bytes
    tsr: bytes | None
    external_tsr: bytes | None
    created_at: str


@dataclass(frozen=True, slots=True)
class LoginFailures(Row):
    username: str
    failures: int
    first_failed_at: str
    last_failed_at: str
    locked_until: str | None


@dataclass(frozen=True, slots=True)
class CopyRequest(Row):
    id: str
    organisation_id: int
    recording_id: str
    requested_by: str
    case_reference: str
    purpose: str
    state: str
    created_at: str
    updated_at: str
    decided_by: str | None
    decided_at: str | None
    decision_reason: str | None
    manifest_version: int | None
    bundle_size: int | None
    bundle_sha256: str | None
    built_at: str | None
    failure: str | None
