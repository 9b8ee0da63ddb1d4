"""Wire times: RFC 3339 in, RFC 3339 UTC with milliseconds out."""

import pytest

from sync.timefmt import normalize_time


@pytest.mark.parametrize("given,expected", [
    ("2026-11-21T14:03:07.123Z", "2026-11-21T14:03:07.123Z"),
    ("2026-11-21t14:03:07z", "2026-11-21T14:03:07.000Z"),
    ("2026-11-21 14:03:07.5+01:00", "2026-11-21T13:03:07.500Z"),
    ("2026-11-21T14:03:07.123456789-05:30", "2026-11-21T19:33:07.123Z"),
    ("0999-01-01T00:00:00Z", "0999-01-01T00:00:00.000Z"),
])
def test_rfc3339_times_are_normalized(given, expected):
    assert normalize_time(given) == expected


@pytest.mark.parametrize("given", [
    "20261121T140307Z", "2026-11-21T14:03Z", "2026-11-21T14:03:07", "2026-11-21", "yesterday",
    "2026-11-21T14:03:07.123Z\n", "2026-13-01T00:00:00Z", "", None, 1700000000,
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
])
def test_anything_else_is_refused(given):
    with pytest.raises((ValueError, TypeError)):
        normalize_time(given)
