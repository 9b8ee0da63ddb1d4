"""The cosigner's HTTP face: `create_app`, the two routes of
c2sp.org/tlog-witness, and the one table from refusals to statuses.

Every answer is plain text (`text/plain; charset=utf-8`), errors included,
except a 409's, which is the held size as `text/x.tlog.size`, as the spec
says. Nothing here logs or keeps a client's address.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from crypto.tlog.witness import SIZE_CONTENT_TYPE, conflict_body

from .errors import BadLogSignature, CosignerError, Inconsistent, MalformedRequest, OldSizeMismatch, UnknownLog
from .settings import CosignerSettings
from .state import CheckpointStore
from .witness import Clock, Witness

log = logging.getLogger("witness.cosigner")

TEXT = "text/plain; charset=utf-8"

# refusal -> HTTP status (c2sp.org/tlog-witness, add-checkpoint)
STATUSES: dict[type, int] = {
    MalformedRequest: 400,
    BadLogSignature: 403,
    UnknownLog: 404,
    OldSizeMismatch: 409,
    Inconsistent: 422,
}


def real_clock() -> int:
    """Now, in POSIX seconds."""
    return int(time.time())


def create_app(settings: CosignerSettings, cosigner, *, clock: Clock = real_clock) -> Flask:
    """The cosigner's app for `settings`, cosigning with `cosigner` (a
    `crypto.tlog.cosignature.Cosigner`) at the times `clock` gives. Raises
    `state.StateDamaged` if a configured log's held checkpoint is unreadable:
    better not to start than to cosign from a forgotten size."""
    store = CheckpointStore(settings.data_dir)
    for origin in settings.logs:
        store.held(origin)
    witness = Witness(cosigner, settings.logs, store, clock)
    app = Flask(__name__)
    app.extensions["witness_cosigner"] = witness

    @app.post("/add-checkpoint")
    def add_checkpoint():
        """Cosign a checkpoint consistent with the held one (tlog-witness)."""
        return Response(witness.add_checkpoint(_bounded_body(settings.max_body_bytes)), 200, content_type=TEXT)

    @app.get("/<hashed_origin>/checkpoint")
    def latest_checkpoint(hashed_origin: str):
        """The latest checkpoint cosigned for a log, by its origin's SHA-256."""
        return Response(witness.latest_checkpoint(hashed_origin), 200, content_type=TEXT)

    @app.get("/")
    def about():
        """Who this witness is, for the person setting a log up."""
        return Response(f"witness-cosigner {cosigner.name}\nvkey {cosigner.verifier.vkey}\n"
                        "POST /add-checkpoint (c2sp.org/tlog-witness)\n", 200, content_type=TEXT)

    @app.errorhandler(CosignerError)
    def refused(exc: CosignerError):
        if isinstance(exc, OldSizeMismatch):
            return Response(conflict_body(exc.size), 409, content_type=SIZE_CONTENT_TYPE)
        return _text(STATUSES[type(exc)], f"{exc}\n")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if isinstance(exc, RequestEntityTooLarge):
            return _text(413, f"the body is larger than {settings.max_body_bytes} bytes\n")
        response = _text(exc.code or 500, f"{exc.name.lower()}\n")
        if exc.code == 405:
            response.headers["Allow"] = ", ".join(exc.valid_methods or ())
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("%s %s failed unexpectedly", request.method, request.path)
        return _text(500, "the witness failed unexpectedly; the error has been logged\n")

    return app


def _bounded_body(limit: int) -> bytes:
    # Refused by its Content-Length before anything is read; a chunked body
    # is read only up to one byte past the limit. (Werkzeug's own limit on
    # a chunked body would cut it at the limit silently.)
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    stream = request.environ["wsgi.input"]
    chunks, total = [], 0
    while chunk := stream.read(min(16384, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise RequestEntityTooLarge()
    return b"".join(chunks)


def _text(status: int, body: str) -> Response:
    return Response(body, status, content_type=TEXT)
