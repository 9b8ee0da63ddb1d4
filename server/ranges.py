"""One `Range` header, read the same way for footage and bundle downloads:
a single byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) is honoured when
`If-Range`, if sent, names the current ETag; anything else (several ranges,
another unit, a malformed header) is ignored and the whole body is sent, as
RFC 9110 allows. A range that starts past the end answers 416 with
`Content-Range: bytes */size`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import request

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class ByteRange:
    """What to send: bytes `start..end` (inclusive) of `total`; `partial`
    when that is an answer to a range (206), else the whole body (200)."""

    start: int
    end: int
    total: int
    partial: bool

    @property
    def status(self) -> int:
        return 206 if self.partial else 200

    @property
    def length(self) -> int:
        return max(self.end - self.start + 1, 0)

    def headers(self) -> dict:
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(self.length)}
        if self.partial:
            headers["Content-Range"] = f"bytes {self.start}-{self.end}/{self.total}"
        return headers


class RangeNotSatisfiable(Exception):
    """The range starts at or past the end of a body of `total` bytes."""

    def __init__(self, total: int):
        super().__init__(total)
        self.total = total


def requested_range(total: int, etag: str) -> ByteRange:
    """The part of a `total`-byte body whose ETag is `etag` that this request
    asks for. Raises `RangeNotSatisfiable`."""
    whole = ByteRange(0, total - 1, total, partial=False)
    header, if_range = request.headers.get("Range"), request.headers.get("If-Range")
    if not header or (if_range is not None and if_range != etag):
        return whole
    match = _RANGE.match(header.strip())
    if not match or not (match.group(1) or match.group(2)):
        return whole
    if match.group(1):
        start = int(match.group(1))
        end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
    else:  # suffix range: the last N bytes
        start, end = max(total - int(match.group(2)), 0), total - 1
    if start >= total or start > end:
        raise RangeNotSatisfiable(total)
    return ByteRange(start, end, total, partial=True)
