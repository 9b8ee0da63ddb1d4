"""Prometheus metrics (`prometheus_client`), served by GET /metrics
(server/health.py).

Two kinds of number:

- counted as requests are answered, in the process that answered them:
  chunk acknowledgement latency, device answers by route, status and error
  code, chunk bytes received. Under gunicorn each worker counts its own;
  when `PROMETHEUS_MULTIPROC_DIR` names a folder (the front door's launcher
  sets it to a fresh one), every process writes its numbers there and a
  scrape of any worker, in any pool, adds them all up (prometheus_client's
  multiprocess mode; gunicorn.conf.py's `child_exit` does its bookkeeping
  when a worker ends). Without it, a scrape sees only the worker it reached.
- read from the records and the disk at scrape time (`ArchiveCollector`):
  disk free and the watermark, recordings receiving, finalization lag, copy
  builds queued and running, whether a scheduler leader is present. Nothing
  is shared between processes for these, so they are the same whichever
  worker answers.

No label ever holds anything about a client: routes, statuses and error
codes only.
"""

from __future__ import annotations

import os
import time

from flask import Flask, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from sync.domain.health import archive_numbers

# Only the metrics below; no process or platform collectors (in multiprocess
# mode they would describe one arbitrary worker), and no `_created` series
# (multiprocess mode has none either, so both modes answer alike).
disable_created_metrics()
_REGISTRY = CollectorRegistry(auto_describe=True)

ACK_SECONDS = Histogram(
    "witness_chunk_ack_seconds",
    "Seconds from the start of a chunk PUT to its acknowledgement (200 or 201), as the app measures it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=_REGISTRY,
)
DEVICE_ANSWERS = Counter(
    "witness_device_requests",
    "Answers to device routes by route, HTTP status and error code (empty for a success): "
    "acknowledgements are route=put_chunk with status 201 (new) or 200 (already held).",
    ["route", "status", "error"],
    registry=_REGISTRY,
)
CHUNK_BYTES = Counter(
    "witness_chunk_bytes_received",
    "Bytes of chunks newly acknowledged (201), as received (encrypted); repeats of a held chunk are not counted.",
    registry=_REGISTRY,
)

_DEVICE_BLUEPRINT = "devices"


def multiprocess_dir() -> str | None:
    """The folder of multiprocess mode, or None (one process's numbers)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


class _Counted:
    """This process's counted metrics, for a registry made per scrape."""

    def collect(self):
        return _REGISTRY.collect()

    def describe(self):
        return []


class ArchiveCollector:
    """The numbers read at scrape time from the records and the disk."""

    def __init__(self, archive):
        self.archive = archive

    def describe(self):
        return []

    def collect(self):
        numbers = archive_numbers(self.archive)
        yield _gauge("witness_disk_free_bytes", "Free bytes on the emptiest disk the server writes to.",
                     numbers.disk_free_bytes)
        yield _gauge("witness_disk_min_free_bytes", "The watermark (WITNESS_MIN_FREE_BYTES): below it new "
                     "recordings are refused with 507.", numbers.min_free_bytes)
        yield _gauge("witness_recordings_receiving", "Recordings in state receiving (not finalized since their "
                     "last chunk).", numbers.recordings_receiving)
        yield _gauge("witness_finalization_lag_seconds", "How long the most overdue recording has been due for "
                     "finalization without a manifest (0 when none is).", numbers.finalization_lag_seconds)
        yield _gauge("witness_copy_builds_queued", "Approved copy requests waiting for their bundle to be built.",
                     numbers.copy_builds_queued)
        yield _gauge("witness_copy_builds_running", "Copy bundles being built now.", numbers.copy_builds_running)
        yield _gauge("witness_scheduler_leader_present", "1 when a process holds the scheduler lock and runs the "
                     "background jobs, else 0.", int(numbers.scheduler_leader_present))


def _gauge(name: str, documentation: str, value) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def scrape(archive, accept_header: str | None) -> tuple[bytes, str]:
    """The exposition (body, content type) for a scrape with this Accept."""
    registry = CollectorRegistry(auto_describe=False)
    folder = multiprocess_dir()
    if folder is not None:
        multiprocess.MultiProcessCollector(registry, path=folder)
    else:
        registry.register(_Counted())
    registry.register(ArchiveCollector(archive))
    encoder, content_type = choose_encoder(accept_header or "")
    return encoder(registry), content_type


def init_app(app: Flask) -> None:
    """Count every answer of the device routes, and time chunk uploads."""

    @app.before_request
    def _start_clock():
        if request.blueprint == _DEVICE_BLUEPRINT:
            g.witness_request_started = time.perf_counter()

    @app.after_request
    def _count(response):
        if request.blueprint != _DEVICE_BLUEPRINT:
            return response
        route = (request.endpoint or "").rpartition(".")[2]
        status = response.status_code
        body = response.get_json(silent=True) if response.is_json and not response.is_streamed else None
        error = body.get("error", "") if status >= 400 and isinstance(body, dict) else ""
        DEVICE_ANSWERS.labels(route, str(status), str(error)).inc()
        if route == "put_chunk" and status in (200, 201):
            started = g.get("witness_request_started")
            if started is not None:
                ACK_SECONDS.observe(time.perf_counter() - started)
            if status == 201 and isinstance(body, dict) and isinstance(body.get("size"), int):
                CHUNK_BYTES.inc(body["size"])
        return response
