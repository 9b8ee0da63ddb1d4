"""The one table from domain exceptions to PROTOCOL.md's JSON errors, and
the handlers that make every error a JSON answer (never HTML, never a trace),
except on console addresses, which get the console's error page
(`error_page`, also used by the pages themselves)."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, make_response, render_template, request
from gunicorn.http.errors import ParseException as GunicornParseError
from werkzeug.exceptions import HTTPException

from sync import errors as domain
from sync.domain.footage import FootageDamaged

from .ranges import RangeNotSatisfiable

log = logging.getLogger("witness.server")

# exception class -> (HTTP status, error code); InvalidInput carries its own code.
PROTOCOL_ERRORS: dict[type, tuple[int, str]] = {
    domain.InvalidInput: (400, "invalid_input"),
    domain.NotFound: (404, "not_found"),
    domain.Forbidden: (403, "forbidden"),
    domain.OwnAccountElsewhere: (403, "use_account_endpoint"),
    domain.BadCredentials: (401, "bad_credentials"),
    domain.EnrollmentRefused: (403, "enrollment_refused"),
    domain.RecordingConflict: (409, "recording_conflict"),
    domain.UnknownKeyId: (422, "unknown_key_id"),
    domain.BadSealedKey: (422, "bad_sealed_key"),
    domain.DigestMismatch: (400, "digest_mismatch"),
    domain.ChunkTooLarge: (413, "chunk_too_large"),
    domain.ChunkUnreadable: (422, "chunk_unreadable"),
    domain.BadDeviceSignature: (422, "bad_device_signature"),
    domain.ChunkConflict: (409, "chunk_conflict"),
    domain.PastFinal: (409, "past_final"),
    domain.StorageFull: (507, "insufficient_storage"),
    domain.BelowWatermark: (507, "insufficient_storage"),
    domain.DeviceGone: (401, "token_revoked"),
    domain.Busy: (503, "server_busy"),
    domain.StoreUnavailable: (503, "server_busy"),
    domain.NotReady: (404, "not_ready"),
    domain.SecondFactorRequired: (401, "totp_required"),
    domain.SecondFactorSetupRequired: (403, "totp_setup_required"),
    domain.SecondFactorAlreadyOn: (409, "totp_already_enabled"),
    domain.WrongSecondFactor: (400, "invalid_totp_code"),
    domain.TooManyAttempts: (429, "too_many_attempts"),
    domain.NotPending: (409, "copy_request_not_pending"),
    domain.BundleNotReady: (409, "bundle_not_ready"),
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "too_many_requests",
}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    """The JSON error body of PROTOCOL.md with its status."""
    response = jsonify(error=code, message=message)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_page(status: int, message: str):
    """A plain page that says what went wrong and what to do."""
    return render_template("console/error.html", status=status, message=message), status


def register_error_handlers(app: Flask) -> None:
    """Make every failure, expected or not, a JSON error."""

    @app.errorhandler(domain.WitnessError)
    def _domain_error(exc: domain.WitnessError):
        status, code = PROTOCOL_ERRORS[type(exc)]
        code = getattr(exc, "code", code)
        if isinstance(exc, domain.BelowWatermark):
            log.warning("new recording refused below the disk watermark")
        elif status == 507:
            log.error("disk full: %s", exc)
        elif isinstance(exc, domain.StoreUnavailable):
            log.error("chunk store unavailable: %s", exc.__cause__ or exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        if isinstance(exc, domain.TooManyAttempts):
            headers = {"Retry-After": str(exc.retry_after)}
        return error_response(status, code, exc.message, headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # The exception's own headers (Allow on a 405, WWW-Authenticate, ...)
        # belong on the answer; only its HTML Content-Type does not.
        headers = {name: value for name, value in exc.get_headers() if name.lower() != "content-type"}
        if request.path.startswith("/console/") and exc.code in (404, 405):
            page = make_response(error_page(exc.code, "There is no such page here." if exc.code == 404 else
                                            "That page cannot be used this way; go back and use its links and "
                                            "buttons."))
            page.headers.update(headers)
            return page
        code = _HTTP_CODES.get(exc.code or 500, "http_error")
        return error_response(exc.code or 500, code, exc.description or exc.name, headers)

    @app.errorhandler(GunicornParseError)
    def _broken_body(exc: GunicornParseError):
        # gunicorn raises these from wsgi.input when a chunked body turns out
        # malformed while the view reads it: the client's fault, not ours.
        # (The connection is then closed: where the next request starts is unknown.)
        return error_response(400, "invalid_chunked_body", "The chunked request body is malformed.")

    @app.errorhandler(RangeNotSatisfiable)
    def _range(exc: RangeNotSatisfiable):
        return error_response(416, "range_not_satisfiable", f"The body is {exc.total} bytes; ask for a range inside it.",
                              {"Content-Range": f"bytes */{exc.total}", "Accept-Ranges": "bytes"})

    @app.errorhandler(FootageDamaged)
    def _damaged(exc: FootageDamaged):
        log.error("stored footage damaged: %s", exc)
        return error_response(500, "footage_damaged",
                              "A stored chunk no longer matches its record; the custodian has been told in the log.")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return error_response(500, "internal_error", "The server failed unexpectedly; the error has been logged.")
