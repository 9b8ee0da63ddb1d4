"""The domain: recordings, chunks, finalization and reassembly, manifests, the
audit log, scheduled jobs and storage. Knows nothing of HTTP.

`Archive` (archive.py) is the one object that owns the database, the chunk
files and the keys; the other modules are functions over it. The evidence
formats and `witness-verify` are in `evidence/`, which imports none of the
rest; this file imports nothing, so importing `sync.evidence.verify` does
not bring in the domain.
"""
