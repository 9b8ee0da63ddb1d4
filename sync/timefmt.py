"""Times on the wire: RFC 3339 UTC with milliseconds, `2026-11-21T14:03:07.123Z`.

The clock is injected (`Archive.clock`) so tests can be deterministic; this
module only formats and parses.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The real clock: an aware UTC datetime."""
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """`2026-11-21T14:03:07.123Z` for an aware datetime."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time with an explicit offset (`Z` or `+hh:mm`).
    Raises `ValueError` for anything else, naive times included."""
    if not isinstance(text, str) or len(text) > 40 or "T" not in text.upper():
        raise ValueError("not an RFC 3339 time")
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError("an RFC 3339 time needs an offset, such as Z")
    return moment.astimezone(timezone.utc)


def normalize_time(text: str) -> str:
    """Parse `text` (see `parse_time`) and return it in the wire format."""
    return format_time(parse_time(text))
