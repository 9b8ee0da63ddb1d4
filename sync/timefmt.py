"""Times on the wire: RFC 3339 UTC with milliseconds, `2026-11-21T14:03:07.123Z`.

The clock is injected (`Archive.clock`) so tests can be deterministic; this
module only formats and parses.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

# RFC 3339 section 5.6 date-time (with 'T', 't' or, as the RFC allows, a space).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def utc_now() -> datetime:
    """The real clock: an aware UTC datetime."""
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """`2026-11-21T14:03:07.123Z` for an aware datetime."""
    m = moment.astimezone(timezone.utc)
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}."
            f"{m.microsecond // 1000:03d}Z")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time with an explicit offset (`Z` or `+hh:mm`).
    Raises `ValueError` for anything else, naive times included."""
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise ValueError("not an RFC 3339 date-time, e.g. 2026-11-21T14:03:07.123Z")
    date, clock = text[:10], text[11:].upper()
    if "." in clock:  # Python takes at most 6 fraction digits
        head, rest = clock.split(".", 1)
        digits = re.match(r"\d+", rest).group()
        clock = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    try:
        return datetime.fromisoformat(f"{date}T{clock.replace('Z', '+00:00')}").astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError("time out of range") from None


def normalize_time(text: str) -> str:
    """Parse `text` (see `parse_time`) and return it in the wire format."""
    return format_time(parse_time(text))
