"""The browser recorder page: a bystander without an app records at /record.
Everything the page does (keys, encryption, the outbox, uploads) runs in the
browser against the device API; the server only hands out the page."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("recorder", __name__)

# No inline script or style anywhere on the page, so the policy can forbid
# them: a script injected into the page could read the outbox's tokens.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@bp.get("/record")
def record():
    """The recorder page."""
    response = render_template("record.html")
    return response, 200, {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        # The camera and microphone for this origin only; no embedding elsewhere.
        "Permissions-Policy": "camera=(self), microphone=(self), geolocation=()",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }
