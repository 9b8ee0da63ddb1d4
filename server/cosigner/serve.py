"""`witness-cosigner`: serve the cosigner with gunicorn, or print its key.

    witness-cosigner [serve] [--bind HOST:PORT]   serve (default 127.0.0.1:7380)
    witness-cosigner key                           print the vkey to hand to a log's operator

The app is built once, before gunicorn forks its workers, so a bad setting
or a damaged state file stops the start with one clear line (exit 2) rather
than a worker crash loop. gunicorn's access log is off and what its HTTP
parser refuses is answered in plain text and logged without the client's
address (`PlainTextWorker`): no client address is written anywhere.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gunicorn.app.base import BaseApplication
from gunicorn.http import errors as http_errors
from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from crypto.cosigner_keys import load_or_create_cosigner

from .app import create_app, real_clock
from .errors import ConfigurationError
from .settings import settings_from_environ
from .state import StateDamaged
from .witness import Clock

log = logging.getLogger("witness.cosigner")


def main(argv: list[str] | None = None, *, clock: Clock = real_clock) -> int:
    """Run the command line; returns the exit status (2 for a setting to
    fix). `clock` is the cosignatures' time source (tests pass a fixed one)."""
    parser = argparse.ArgumentParser(prog="witness-cosigner",
                                     description="A C2SP tlog-witness cosigner (docs/cosigner.md).")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="serve add-checkpoint (the default)")
    serve.add_argument("--bind", help="HOST:PORT to listen on (default WITNESS_COSIGNER_BIND or 127.0.0.1:7380)")
    commands.add_parser("key", help="print this witness's verifier key (vkey), making the key if needed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    try:
        settings = settings_from_environ(need_logs=args.command != "key")
        cosigner = load_or_create_cosigner(settings.keys_dir, settings.name)
        if args.command == "key":
            print(cosigner.verifier.vkey)
            return 0
        app = create_app(settings, cosigner, clock=clock)
    except (ConfigurationError, StateDamaged, OSError, ValueError) as exc:
        print(f"witness-cosigner: {exc}", file=sys.stderr)
        return 2
    bind = getattr(args, "bind", None) or settings.bind
    log.info("witness %s, vkey %s, cosigning %d log(s), listening on %s", cosigner.name, cosigner.verifier.vkey,
             len(settings.logs), bind)
    _Gunicorn(app, {
        "bind": bind,
        "workers": settings.workers,
        "threads": settings.threads,
        "worker_class": f"{__name__}.PlainTextWorker",
        "accesslog": None,
        "errorlog": "-",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 30,
        "control_socket_disable": True,
        "proc_name": "witness-cosigner",
    }).run()
    return 0


class _Gunicorn(BaseApplication):
    def __init__(self, app, options: dict) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._app


# What gunicorn's parser refuses: (exception classes, status, reason, body).
_PARSER_ERRORS = [
    ((http_errors.LimitRequestLine,), 414, "URI Too Long", "the request line is too long\n"),
    ((http_errors.LimitRequestHeaders,), 431, "Request Header Fields Too Large", "the headers are too large\n"),
    ((http_errors.ParseException,), 400, "Bad Request", "the request is not valid HTTP/1.1\n"),
]


class PlainTextWorker(ThreadWorker):
    """gunicorn's threaded worker, answering what its HTTP parser refuses in
    plain text instead of HTML, and logging only the kind of refusal (its
    default logs the client's address)."""

    def handle_error(self, req, client, addr, exc):
        for classes, status, reason, body in _PARSER_ERRORS:
            if isinstance(exc, classes):
                self.log.warning("Refused a malformed request: %s (%s)", status, type(exc).__name__)
                break
        else:
            status, reason, body = 500, "Internal Server Error", "the witness failed unexpectedly\n"
            self.log.exception("Error handling a request")
        payload = body.encode("ascii")
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n")
        try:
            util.write_nonblock(client, head.encode("ascii") + payload)
        except Exception:
            self.log.debug("Failed to send an error answer.")
