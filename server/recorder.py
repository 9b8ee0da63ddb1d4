"""The browser recorder page: a bystander without an app records at /record.
Everything the page does (keys, encryption, the outbox, uploads) runs in the
browser against the device API; the server only hands out the page."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("recorder", __name__)

@bp.get("/record")
def record():
    """The recorder page. Like every page it gets the strict
    Content-Security-Policy of `server/pages.py` (no inline script or style:
    a script injected into the page could read the outbox's tokens)."""
    return render_template("record.html"), 200, {
        # The camera and microphone for this origin only; no embedding elsewhere.
        "Permissions-Policy": "camera=(self), microphone=(self), geolocation=()",
        "Referrer-Policy": "no-referrer",
        # Revalidated on every visit, but may be kept for an offline reload.
        "Cache-Control": "no-cache",
    }
