"""Background work: idle finalization, copy bundle builds, storage
reconciliation and the expiry of unused devices, run by APScheduler in
exactly one process however many gunicorn workers serve.

Every process that starts the app calls `start_background_jobs`; each starts
a daemon thread that competes for the leader lock (sync/leader.py: an
exclusive `flock` on `<data>/scheduler.lock` by default, a PostgreSQL
advisory lock beside PostgreSQL records). The one holding it runs the
scheduler; the others wait. If that process dies (even by kill -9) the lock
is freed and a waiting process takes over, so no second process has to be
remembered. A leader that finds it no longer holds the lock (its database
session lost) stops its jobs and competes again.
"""

from __future__ import annotations

import logging
import os
import threading

from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler

from ..archive import Archive
from ..leader import LeaderLock
from . import audit, transparency
from .copies import build_approved_bundles, resume_interrupted_builds
from .expiry import expire_unused_devices
from .finalize import finalize_due_recordings
from .reconcile import reconcile_storage
from .timestamps import ExternalStampingJob, backfill_builtin_tokens

log = logging.getLogger("witness.scheduler")
# One line per tick would drown the log; failures are still logged by us.
logging.getLogger("apscheduler").setLevel(logging.WARNING)
_RECONCILE_EVERY_SECONDS = 3600
_EXPIRE_DEVICES_EVERY_SECONDS = 3600
_CHECK_LEADERSHIP_EVERY_SECONDS = 5


class BackgroundJobs:
    """Handle on the leader-election thread and, once leader, the scheduler."""

    def __init__(self, archive: Archive, lock: LeaderLock | None = None):
        self.archive = archive
        self.lock = lock or archive.leader_lock()
        self.scheduler: BackgroundScheduler | None = None
        self.is_leader = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="witness-scheduler-leader", daemon=True)

    def start(self) -> "BackgroundJobs":
        self._thread.start()
        return self

    def _run(self) -> None:
        while self.lock.acquire(self._stop):  # blocks until we lead, or are told to stop
            log.info("process %d runs the background jobs", os.getpid())
            run_startup_jobs(self.archive)
            self.scheduler = self._start_scheduler()
            self.is_leader.set()
            while not self._stop.wait(_CHECK_LEADERSHIP_EVERY_SECONDS):
                if not self.lock.holds():
                    log.error("process %d lost the leader lock: its background jobs stop, and it competes again",
                              os.getpid())
                    break
            self.is_leader.clear()
            self._shutdown_scheduler()
            if self._stop.is_set():
                return
            self.lock.release()

    def _start_scheduler(self) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(daemon=True)
        scheduler.add_job(run_finalizer, "interval", args=[self.archive],
                          seconds=self.archive.settings.scheduler_interval_seconds,
                          id="finalize", max_instances=1, coalesce=True)
        scheduler.add_job(run_reconcile, "interval", args=[self.archive], seconds=_RECONCILE_EVERY_SECONDS,
                          id="reconcile", max_instances=1, coalesce=True)
        scheduler.add_job(run_device_expiry, "interval", args=[self.archive], seconds=_EXPIRE_DEVICES_EVERY_SECONDS,
                          id="expire_devices", max_instances=1, coalesce=True)
        scheduler.add_job(run_log_checkpoint, "interval", args=[self.archive],
                          seconds=self.archive.settings.log_checkpoint_seconds,
                          id="log_checkpoint", max_instances=1, coalesce=True)
        if self.archive.settings.tsa_url is not None:
            # Every scheduler tick: it asks only when the newest checkpoint
            # has no external token yet, so a chunk is covered by an
            # externally stamped checkpoint soon after the checkpoint is made.
            scheduler.add_job(transparency.CheckpointStampingJob(self.archive), "interval",
                              seconds=self.archive.settings.scheduler_interval_seconds,
                              id="log_external_time_stamps", max_instances=1, coalesce=True)
        if self.archive.settings.log_witnesses:
            # Its own job: a slow witness never delays the next checkpoint.
            scheduler.add_job(run_log_witnessing, "interval", args=[self.archive],
                              seconds=self.archive.settings.log_checkpoint_seconds,
                              id="log_witnessing", max_instances=1, coalesce=True)
        scheduler.add_job(run_audit_anchor, "interval", args=[self.archive],
                          seconds=self.archive.settings.audit_anchor_seconds,
                          id="audit_anchor", max_instances=1, coalesce=True)
        # Its own job, so a long build never holds up finalization.
        scheduler.add_job(run_bundle_builds, "interval", args=[self.archive],
                          seconds=self.archive.settings.scheduler_interval_seconds,
                          id="bundles", max_instances=1, coalesce=True)
        # The external TSA is asked here, after the manifest is committed,
        # never inside finalization's write transaction.
        if self.archive.settings.tsa_url is not None:
            scheduler.add_job(ExternalStampingJob(self.archive), "interval",
                              seconds=self.archive.settings.scheduler_interval_seconds,
                              id="external_time_stamps", max_instances=1, coalesce=True)
        scheduler.start()
        return scheduler

    def _shutdown_scheduler(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            try:
                scheduler.shutdown(wait=True)
            except SchedulerNotRunningError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._shutdown_scheduler()
        self.lock.release()


def start_background_jobs(archive: Archive) -> BackgroundJobs:
    """Start competing for the scheduler lock; see the module docstring."""
    return BackgroundJobs(archive).start()


def run_startup_jobs(archive: Archive) -> None:
    """What the leader does once when it takes over: reconcile storage,
    time-stamp manifest versions older than the built-in TSA, then finalize
    whatever became due while no process was leading, and delete devices
    that expired unused meanwhile."""
    run_reconcile(archive)
    run_log_checkpoint(archive)
    run_time_stamp_backfill(archive)
    run_finalizer(archive)
    run_device_expiry(archive)
    try:
        if resumed := resume_interrupted_builds(archive):
            log.warning("%d copy bundle build(s) were interrupted and will be built again", resumed)
    except Exception:
        log.exception("resuming interrupted bundle builds failed")


def run_finalizer(archive: Archive) -> None:
    try:
        for recording_id, version in finalize_due_recordings(archive):
            log.info("finalized %s as manifest version %d", recording_id, version)
    except Exception:
        log.exception("finalization failed")


def run_log_checkpoint(archive: Archive) -> None:
    try:
        transparency.make_checkpoint(archive)
    except Exception:
        log.exception("signing the transparency log's checkpoint failed")


def run_log_witnessing(archive: Archive) -> None:
    try:
        transparency.send_to_witnesses(archive)
    except Exception:
        log.exception("sending the transparency log's checkpoint to its witnesses failed")


def run_audit_anchor(archive: Archive) -> None:
    try:
        audit.anchor_heads(archive)
    except Exception:
        log.exception("anchoring the recordings' audit chains failed")


def run_bundle_builds(archive: Archive) -> None:
    try:
        for request_id in build_approved_bundles(archive):
            log.info("built the bundle of copy request %s", request_id)
    except Exception:
        log.exception("building copy bundles failed")


def run_reconcile(archive: Archive) -> None:
    try:
        report = reconcile_storage(archive)
        if report.temporaries_removed or report.orphan_files_removed or report.lost_chunks:
            log.warning("reconciliation: %d temporary files and %d unacknowledged chunk files removed; "
                        "lost chunks: %s", report.temporaries_removed, len(report.orphan_files_removed),
                        report.lost_chunks)
    except Exception:
        log.exception("reconciliation failed")


def run_device_expiry(archive: Archive) -> None:
    try:
        if expired := expire_unused_devices(archive):
            log.info("%d device(s) that never made a recording expired", expired)
    except Exception:
        log.exception("expiring unused devices failed")


def run_time_stamp_backfill(archive: Archive) -> None:
    try:
        if stamped := backfill_builtin_tokens(archive):
            log.warning("%d manifest version(s) made before the built-in TSA existed were time-stamped now",
                        len(stamped))
    except Exception:
        log.exception("time-stamping older manifest versions failed")
