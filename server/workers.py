"""gunicorn's own answers and logs, made to keep PROTOCOL.md's promises where
gunicorn is reached directly (`gunicorn wsgi:app`, or a pool behind nginx).

gunicorn parses HTTP before the app sees anything; what it cannot parse (a
bad request line, headers over its limits, a URI too long, a broken chunked
body, a bad Content-Length, NUL bytes) it answers itself, by default with an
HTML page, and logs `Invalid request from ip=<client address>`. Here:

- `JsonThreadWorker` (gunicorn.conf.py's `worker_class`) answers those with
  PROTOCOL.md's JSON error body, the status gunicorn would have used (400,
  403, 414, 417, 431, 501, or 500 for a fault of the server's own) and
  `Connection: close`, and logs the refusal without the client's address or
  anything the client sent (a request line may hold an enrollment code).
- `JsonAccessLogger` (`logger_class`) writes the access log, when one is
  enabled (`WITNESS_ACCESS_LOG`), as one JSON object per line. It offers the
  format only atoms that cannot carry a client address, query string,
  referrer, header or token, whatever `access_log_format` asks for, JSON-
  encodes each one, and hides the enrollment code in
  `/enrollment-codes/<code>/revoke` paths.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from datetime import datetime, timezone

from gunicorn import glogging, util
from gunicorn.http import errors as http_errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import ThreadWorker

# (exception classes, status, reason phrase, error code, message); first match
# wins, so the response-header errors (subclasses of InvalidHeader, and the
# app's fault, not the client's) come before the request-header ones.
_PARSER_ERRORS: list[tuple[tuple[type, ...], int, str, str, str]] = [
    ((http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName), 500, "Internal Server Error",
     "internal_error", "The server failed unexpectedly; the error has been logged."),
    ((http_errors.LimitRequestLine,), 414, "URI Too Long", "uri_too_long",
     "The request line is longer than this server accepts; send a shorter address."),
    ((http_errors.LimitRequestHeaders,), 431, "Request Header Fields Too Large", "headers_too_large",
     "The request has more header fields, or a larger one, than this server accepts."),
    ((http_errors.UnsupportedTransferCoding,), 501, "Not Implemented", "unsupported_transfer_coding",
     "The only transfer coding this server accepts is chunked."),
    ((http_errors.ExpectationFailed,), 417, "Expectation Failed", "expectation_failed",
     "The only expectation this server understands is Expect: 100-continue."),
    ((http_errors.ForbiddenProxyRequest,), 403, "Forbidden", "forbidden",
     "PROXY protocol requests are not accepted from this peer."),
    ((ssl.SSLError,), 403, "Forbidden", "tls_error", "The TLS connection failed."),
    ((http_errors.ConfigurationProblem,), 500, "Internal Server Error", "internal_error",
     "The server is misconfigured; the error has been logged."),
    ((http_errors.InvalidChunkSize, http_errors.ChunkMissingTerminator, http_errors.InvalidChunkExtension), 400,
     "Bad Request", "invalid_chunked_body", "The chunked request body is malformed."),
    ((http_errors.InvalidRequestLine, http_errors.InvalidRequestMethod, http_errors.InvalidHTTPVersion), 400,
     "Bad Request", "invalid_request_line", "The request line is not valid HTTP/1.1 (METHOD /path HTTP/1.1)."),
    ((http_errors.InvalidHeader, http_errors.InvalidHeaderName, http_errors.ObsoleteFolding), 400,
     "Bad Request", "invalid_header",
     "A header field is malformed (its name or value, or a Content-Length or Transfer-Encoding that cannot be "
     "trusted)."),
    ((http_errors.ParseException,), 400, "Bad Request", "bad_request", "The request is not valid HTTP."),
]
_UNEXPECTED = (500, "Internal Server Error", "internal_error",
               "The server failed unexpectedly; the error has been logged.")


def parser_error(exc: BaseException) -> tuple[int, str, str, str]:
    """(status, reason phrase, error code, message) for what gunicorn raised."""
    for classes, status, reason, code, message in _PARSER_ERRORS:
        if isinstance(exc, classes):
            return status, reason, code, message
    return _UNEXPECTED


def error_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with PROTOCOL.md's JSON error body."""
    body = json.dumps({"error": code, "message": message}).encode() + b"\n"
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n")
    return head.encode("ascii") + body


class JsonThreadWorker(ThreadWorker):
    """gunicorn's threaded worker, answering what its parser refuses in JSON
    and logging it without the client's address (see the module docstring)."""

    def _keepalive_after(self, conn, keepalive):
        # Before reusing a connection, gunicorn reads away the body the app
        # did not read. If that body turns out malformed, the request was
        # already answered: a second (error) answer would be taken by the
        # client for its next request, so close the connection instead.
        try:
            return super()._keepalive_after(conn, keepalive)
        except http_errors.ParseException as exc:
            self.log.info("Closed a connection after its answer: the unread request body was malformed (%s)",
                          type(exc).__name__)
            return False

    def handle_error(self, req, client, addr, exc):
        request_start = datetime.now()
        status, reason, code, message = parser_error(exc)
        if status >= 500:
            # What was asked, without the query string (an enrollment code may be in it).
            what = f"{req.method} {redacted_path(req.path)}" if hasattr(req, "method") and hasattr(req, "path") \
                else "(no request line read)"
            self.log.exception("Error handling request %s", what)
        else:
            # Only the kind of refusal: the exception's own text may repeat
            # the request line or a peer's address.
            self.log.warning("Refused a malformed request: %s %s (%s)", status, code, type(exc).__name__)
        if req is None and isinstance(exc, (http_errors.InvalidHeader, http_errors.InvalidHeaderName)):
            req = getattr(exc, "req", None)  # for the access log, as gunicorn does
        response = error_bytes(status, reason, code, message)
        if req is not None and self.log.access_log_enabled:
            try:
                environ = default_environ(req, client, self.cfg)
                environ["PATH_INFO"] = req.path
                resp = Response(req, client, self.cfg)
                resp.status = f"{status} {reason}"
                resp.sent = len(response) - response.index(b"\r\n\r\n") - 4
                self.log.access(resp, req, environ, datetime.now() - request_start)
            except Exception:  # a request too broken to describe is still answered
                self.log.debug("Could not log the refused request.")
        try:
            util.write_nonblock(client, response)
        except Exception:
            self.log.debug("Failed to send error message.")


_CODE_IN_PATH = re.compile(r"(/enrollment-codes/)[^/]+")


def redacted_path(path: str | None) -> str | None:
    """The path with any enrollment code in it replaced by `{code}`."""
    return None if path is None else _CODE_IN_PATH.sub(r"\1{code}", path)


class JsonAtoms(dict):
    """Atoms for `access_log_format`, each already a JSON value; an atom not
    offered (a client address, a header, the query string) is `null`."""

    def __init__(self, atoms: dict):
        super().__init__((key, json.dumps(value)) for key, value in atoms.items())

    def __getitem__(self, key):
        return super().get(key, "null")


class JsonAccessLogger(glogging.Logger):
    """Access log lines as JSON objects with only harmless atoms:
    `time` (RFC 3339 UTC), `m` method, `U` path (no query string; enrollment
    codes hidden), `H` protocol, `s` status, `B` body bytes sent, `M`/`D`/`T`/`L`
    duration (ms, µs, s, s.µs) and `p` process id."""

    atoms_wrapper_class = JsonAtoms

    def atoms(self, resp, req, environ, request_time):
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        try:
            status = int(status)
        except (TypeError, ValueError):
            status = None
        sent = getattr(resp, "sent", None)
        return {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "m": environ.get("REQUEST_METHOD"),
            "U": redacted_path(environ.get("PATH_INFO")),
            "H": environ.get("SERVER_PROTOCOL"),
            "s": status,
            "B": sent,
            "b": sent,
            "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
            "D": request_time.seconds * 1_000_000 + request_time.microseconds,
            "T": request_time.seconds,
            "L": "%d.%06d" % (request_time.seconds, request_time.microseconds),
            "p": os.getpid(),
        }
