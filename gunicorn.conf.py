"""gunicorn reads this file when started as `gunicorn wsgi:app` here.

Threads, not just processes: an upload spends most of its time waiting on
the network and on fsync, so a few processes with several threads each keep
the cores busy. Every worker builds its own app; exactly one of them wins
the scheduler lock (see sync/scheduler.py).
"""

import multiprocessing
import os

bind = os.environ.get("WITNESS_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WITNESS_WORKERS", min(4, multiprocessing.cpu_count() + 1)))
# gthread, answering what gunicorn's HTTP parser refuses with PROTOCOL.md's
# JSON error body and logging it without the client's address (server/workers.py).
worker_class = "server.workers.JsonThreadWorker"
threads = int(os.environ.get("WITNESS_THREADS", 8))
timeout = 60
graceful_timeout = 20
keepalive = 30
accesslog = os.environ.get("WITNESS_ACCESS_LOG") or None
# One JSON object per request. The logger offers only these atoms, so no
# client address, query string (`/record?code=`), header or token can be
# added here by mistake (server/workers.py).
logger_class = "server.workers.JsonAccessLogger"
access_log_format = ('{"time": %(time)s, "method": %(m)s, "path": %(U)s, "status": %(s)s, '
                     '"bytes": %(B)s, "duration_ms": %(M)s, "protocol": %(H)s}')
# gunicorn's control socket is one path per user (~/.gunicorn/gunicorn.ctl):
# several servers on one machine (tests, benchmarks) would take it from each
# other, and nothing here uses it.
control_socket_disable = True


def child_exit(server, worker):
    """prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, a
    fresh folder per start; see server/metrics.py): forget a worker's live
    gauges when it ends; its counters and histograms stay in the totals."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
