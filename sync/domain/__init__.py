"""What the service does: each module is one capability, a set of functions
that take an `Archive` and typed arguments (never HTTP headers or JSON
bodies) and raise the errors of `sync/errors.py`.

- `ingest.py`: devices, recordings and chunks as they arrive;
- `finalize.py`: manifests (signed, time-stamped) when a recording ends or
  pauses; `timestamps.py`: the external time-stamp authority;
- `footage.py`: reassembled plaintext for staff;
- `retrieval.py`: lists and details staff see;
- `audit.py`: the hash-chained custody log;
- `accounts.py`, `logins.py`: staff, sessions, second factors;
- `copies.py`, `bundle.py`: copy requests and the bundles lawyers get;
- `reconcile.py`, `expiry.py`, `disk.py`, `health.py`: upkeep and readiness;
- `scheduler.py`: the background jobs, run by the leader only;
- `backup.py`: backup, restore and move-archive;
- `buckets.py`, `identifiers.py`, `paging.py`: small shared mechanisms.

Nothing here opens a database or a bucket: the `Archive` holds them.
"""
