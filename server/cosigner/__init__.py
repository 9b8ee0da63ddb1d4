"""`witness-cosigner`: a C2SP tlog-witness that a partner organisation runs
with its own key (docs/cosigner.md).

It keeps, per configured log, the latest checkpoint it cosigned, and
cosigns a new one only if it is signed by the log and provably extends that
one; so a server that shows different histories to different people cannot
get both cosigned. It stands alone: it imports only `crypto/` of the
project, Flask, gunicorn and the standard library (setup.cfg's
`cosigner-alone` contract), so it can be run by people who run nothing
else of Witness Sync.

- `settings.py`: `WITNESS_COSIGNER_*` and the logs file.
- `state.py`: the held checkpoints, one durable file per log, changed under
  a lock (compare-and-swap).
- `witness.py`: add-checkpoint's checks, in the spec's order.
- `app.py`: the HTTP routes and the one table of statuses.
- `serve.py`: the command line and gunicorn.
"""
