"""Per-device abuse limits: token buckets in memory (sync/buckets.py), keyed
by the device id of the verified token, never by an address, and never
written anywhere.

Every request a device makes with its token takes one token from its
request bucket (`WITNESS_DEVICE_REQUEST_BURST`, refilled at
`WITNESS_DEVICE_REQUESTS_PER_SECOND`); starting a recording also takes one
from its recording bucket (`WITNESS_DEVICE_RECORDING_BURST`, one more every
`WITNESS_DEVICE_RECORDING_INTERVAL_SECONDS`). An empty bucket answers 429
`too_many_requests` with `Retry-After`, before anything is read or kept.
The buckets are per worker process: with W workers a device may get up to
W times these numbers. docs/operations.md gives the defaults and why.
"""

from __future__ import annotations

from functools import wraps

from flask import current_app, g

from sync.domain.buckets import TokenBuckets, whole_seconds

from .auth import DEVICE
from .errors import error_response


class DeviceLimits:
    """The two buckets of every device, in this process."""

    def __init__(self, settings):
        self.requests = TokenBuckets(settings.device_request_burst, settings.device_requests_per_second)
        self.recordings = TokenBuckets(settings.device_recording_burst,
                                       1.0 / settings.device_recording_interval_seconds)

    def refusal(self, device_id: str, *, new_recording: bool):
        """None if the request may go on, else the 429 answer."""
        wait = self.requests.take(device_id)
        if wait:
            return _too_many(wait, "This device is sending requests faster than the server takes them from one "
                                   "phone; nothing was kept. Wait Retry-After seconds and send again.")
        if new_recording and (wait := self.recordings.take(device_id)):
            return _too_many(wait, "This device started more recordings than a phone does in this time; nothing "
                                   "was kept. Wait Retry-After seconds before starting another.")
        return None


def _too_many(wait: float, message: str):
    return error_response(429, "too_many_requests", message, {"Retry-After": str(whole_seconds(wait))})


def device_limits() -> DeviceLimits:
    """This app's (this process's) limits, made on first use."""
    limits = current_app.extensions.get("witness_device_limits")
    if limits is None:
        limits = current_app.extensions.setdefault("witness_device_limits",
                                                   DeviceLimits(current_app.extensions["witness"].settings))
    return limits


def limited(*, new_recording: bool = False):
    """View decorator, placed under `require_role`: a device's request takes
    its tokens first (staff callers are not limited here)."""

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if g.role == DEVICE:
                refusal = device_limits().refusal(g.device_id, new_recording=new_recording)
                if refusal is not None:
                    return refusal
            return view(*args, **kwargs)

        return wrapper

    return decorate
