"""The operators' audience: GET /healthz (alive), GET /readyz (ready to take
footage) and GET /metrics (Prometheus, with the configured token only).

/healthz and /readyz need no token and say nothing about anyone: a status
and the names of the checks. /metrics is served only when
`WITNESS_METRICS_TOKEN` is set (404 otherwise, like any unknown path), and
only to `Authorization: Bearer <that token>`, compared in constant time.
Where the request came from proves nothing: behind the front door every
request comes from loopback.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request

from sync.domain.health import ReadinessProbe

from . import metrics
from .auth import archive
from .errors import error_response

bp = Blueprint("health", __name__)


def init_app(app: Flask) -> None:
    """Register the routes, the readiness probe and the metric hooks."""
    app.extensions["witness_readiness"] = ReadinessProbe(app.extensions["witness"])
    app.register_blueprint(bp)
    metrics.init_app(app)


@bp.after_request
def _never_cached(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/healthz")
def healthz():
    """The process answers. Nothing else is looked at."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Records and chunk store writable, disk above the watermark, a
    scheduler leader present: 200, else 503 naming the failing checks.
    Checked at most once a second per process."""
    result = current_app.extensions["witness_readiness"]()
    if result.ready:
        return jsonify(status="ready", checks=result.checks)
    response = jsonify(error="not_ready", message=result.message(), status="not_ready", checks=result.checks)
    response.status_code = 503
    return response


@bp.get("/metrics")
def metrics_view():
    """Prometheus exposition, for the holder of the metrics token."""
    token = archive().settings.metrics_token
    if token is None:
        abort(404)
    if not _bearer_matches(request.headers.get("Authorization", ""), token):
        return error_response(401, "unauthorized", "Send Authorization: Bearer <the WITNESS_METRICS_TOKEN>.",
                              {"WWW-Authenticate": 'Bearer realm="metrics"'})
    body, content_type = metrics.scrape(archive(), request.headers.get("Accept"))
    return Response(body, content_type=content_type)


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.strip().partition(" ")
    # Digests of both, so neither the length nor the bytes show in the timing.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        hashlib.sha256(given.strip().encode("utf-8", "replace")).digest(),
        hashlib.sha256(token.encode("utf-8")).digest())
