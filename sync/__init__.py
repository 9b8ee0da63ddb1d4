"""The sync room: everything the service does and keeps, knowing nothing of
HTTP. Its folders are its architecture:

- `domain/`: what the service does (ingest, finalize, footage, audit,
  accounts, logins, copies and bundles, retrieval, reconciliation, expiry,
  time-stamps, backups, the scheduled jobs). Functions over an `Archive`.
- `archive.py`: `Archive`, the one object that owns the records, the chunk
  and blob stores, the leader lock, the keys and the clock, opened from
  `settings.py`. The only place an adapter is chosen.
- `records/`: the `Records` port (a unit of work) and its SQLite and
  PostgreSQL adapters, with their numbered migrations.
- `storage/`: the `ChunkStore` and `BlobStore` ports and their local-file
  and S3 adapters.
- `leader.py`: the `LeaderLock` port and its `flock` and PostgreSQL adapters.
- `evidence/`: the evidence formats and `witness-verify`; imports only
  `crypto/`.
- `client/`: the reference device client and `witness-record`; speaks
  HTTP only, imports none of the rest.
- `errors.py`: the domain's errors, which `server/errors.py` maps to
  statuses and error codes in its one table; `timefmt.py`: the one time
  format; `durable.py`: fsync by path, for every durable write.

Import direction (import-linter, setup.cfg): domain -> archive -> records,
storage, leader -> errors, timefmt, durable. This file imports nothing, so importing
`sync.evidence.verify` does not bring in the domain.
"""
