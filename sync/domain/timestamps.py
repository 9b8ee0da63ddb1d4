"""Time-stamps beyond the one the built-in TSA makes at finalization.

An external TSA (`WITNESS_TSA_URL`): every manifest version also gets a
token from an authority the organisation does not run, so the time does not
rest on the server's own key alone. It is asked after the manifest is
committed, by a scheduled job, never inside the finalization transaction:
that transaction holds the database's write lock, and a TSA may take seconds
to answer or be down for hours. Until it answers, the version simply has no
external token (`manifests.external_tsr` is NULL); the job keeps asking,
oldest versions first, and every token is verified (chain to
`WITNESS_TSA_CA_FILE`, imprint, nonce) before it is kept.

Back-fill: manifest versions made before the server had a built-in TSA get a
built-in token once, when a process takes over the background jobs. Such a
token is dated when it is made, not when the manifest was signed, and the
audit log says so.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

from crypto.tsa import TimeStampFacts, TimeStampInvalid, time_stamp

from ..archive import Archive
from ..timefmt import format_time
from . import audit
from .tsa_client import MAX_RETRY_DELAY_SECONDS, RetryPause, TsaUnavailable, ask_external_tsas

log = logging.getLogger("witness.timestamps")



@dataclass
class StampingRun:
    """What one `stamp_externally` run did: the `(recording_id, version)`
    pairs stamped, and why it stopped early (None: nothing left to do)."""

    stamped: list[tuple[str, int]] = field(default_factory=list)
    failure: str | None = None


def stamp_externally(archive: Archive, *, limit: int = 20) -> StampingRun:
    """Ask the external TSA for a token for up to `limit` manifest versions
    that have none, oldest first; verify and keep each, auditing it as
    `manifest.time_stamped_externally` in the recording's custody log.

    Stops at the first failure (TSA unreachable or answering with an error,
    a reply that does not verify, an unreadable CA file), logs it and
    reports it in `StampingRun.failure`: the rest wait for the next run.
    Does nothing when no external TSA is configured. Raises only what the
    records raise (`StorageFull`, `Busy`)."""
    settings = archive.settings
    run = StampingRun()
    if settings.tsa_url is None:
        return run
    rows = archive.database.query(
        """SELECT recording_id, version, sha256 FROM manifests WHERE external_tsr IS NULL
           ORDER BY created_at, recording_id, version LIMIT ?""", [limit])
    if not rows:
        return run
    try:
        chain_pem = settings.tsa_ca_file.read_bytes()
    except OSError as exc:
        run.failure = f"cannot read WITNESS_TSA_CA_FILE {settings.tsa_ca_file}: {exc.strerror or exc}"
        log.error("external time-stamps: %s", run.failure)
        return run
    for row in rows:
        digest = bytes.fromhex(row["sha256"])
        try:
            url, reply, facts = ask_external_tsas(settings.tsa_urls, digest, chain_pem)
        except TsaUnavailable as exc:
            run.failure = str(exc)
            log.warning("external time-stamps: %s; %d version(s) wait", run.failure, len(rows) - len(run.stamped))
            return run
        except TimeStampInvalid as exc:
            run.failure = f"{exc} (manifest {row['recording_id']} version {row['version']})"
            hint = " (is WITNESS_TSA_CA_FILE the root that TSA chains to?)" if "chain" in str(exc) else ""
            log.error("external time-stamps: %s%s", run.failure, hint)
            return run
        if _keep_external_token(archive, row, url, reply, facts):
            run.stamped.append((row["recording_id"], row["version"]))
    return run


def _keep_external_token(archive: Archive, row: dict, url: str, reply: bytes, facts: TimeStampFacts) -> bool:
    with archive.database.transaction() as db:
        cursor = db.execute(
            "UPDATE manifests SET external_tsr = ? WHERE recording_id = ? AND version = ? AND external_tsr IS NULL",
            [reply, row["recording_id"], row["version"]])
        if cursor.rowcount != 1:
            return False
        audit.append_entry(db, at=archive.now(), actor="system", action="manifest.time_stamped_externally",
                           recording_id=row["recording_id"],
                           detail={"version": row["version"], "manifest_sha256": row["sha256"],
                                   "tsa_url": url, **_facts_detail(reply, facts)})
    return True


def _facts_detail(token: bytes, facts: TimeStampFacts) -> dict:
    return {"token_sha256": hashlib.sha256(token).hexdigest(), "gen_time": format_time(facts.gen_time),
            # As text: serial numbers run to 160 bits, past what JSON readers keep exactly.
            "serial_number": str(facts.serial_number), "tsa_name": facts.tsa_name, "policy": facts.policy,
            "root_sha256": facts.root_sha256}


def backfill_builtin_tokens(archive: Archive, *, batch: int = 100) -> list[tuple[str, int]]:
    """Give every manifest version without a built-in token (made before the
    server had a TSA) one made now, audited as `manifest.time_stamp_backfilled`
    with the token's time, so nobody mistakes it for one made at signing.
    Returns the `(recording_id, version)` pairs stamped. Raises what the
    records raise (`StorageFull`, `Busy`)."""
    stamped = []
    while True:
        rows = archive.database.query(
            "SELECT recording_id, version, sha256 FROM manifests WHERE tsr IS NULL ORDER BY created_at LIMIT ?",
            [batch])
        if not rows:
            return stamped
        for row in rows:
            made_at = archive.clock()
            token = time_stamp(archive.keys.tsa, bytes.fromhex(row["sha256"]), at=made_at)
            with archive.database.transaction() as db:
                cursor = db.execute(
                    "UPDATE manifests SET tsr = ? WHERE recording_id = ? AND version = ? AND tsr IS NULL",
                    [token, row["recording_id"], row["version"]])
                if cursor.rowcount != 1:
                    continue
                audit.append_entry(db, at=archive.now(), actor="system", action="manifest.time_stamp_backfilled",
                                   recording_id=row["recording_id"],
                                   detail={"version": row["version"], "manifest_sha256": row["sha256"],
                                           "tsa": "builtin", "gen_time": format_time(made_at),
                                           "token_sha256": hashlib.sha256(token).hexdigest()})
            stamped.append((row["recording_id"], row["version"]))


class ExternalStampingJob:
    """The scheduler's job: `stamp_externally` until nothing is left, never
    raising. After a failed run it waits before asking again, doubling the
    wait up to `MAX_RETRY_DELAY_SECONDS`, so a TSA that is down (or a public
    one that rate-limits) is not asked every second."""

    def __init__(self, archive: Archive, *, first_retry_seconds: float | None = None,
                 monotonic=time.monotonic):
        self.archive = archive
        self.pause = RetryPause(first_retry_seconds or max(archive.settings.scheduler_interval_seconds, 1.0),
                                monotonic)

    def __call__(self) -> None:
        if not self.pause.due():
            return
        try:
            while True:
                run = stamp_externally(self.archive)
                for recording_id, version in run.stamped:
                    log.info("external time-stamp kept for %s version %d", recording_id, version)
                if run.failure is not None:
                    self.pause.failed()
                    return
                if self.pause.succeeded():
                    log.info("external time-stamps: the authority answers again")
                if not run.stamped:
                    return
        except Exception:
            log.exception("external time-stamping failed")
            self.pause.failed()
