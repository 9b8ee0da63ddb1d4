"""Ids that arrive from outside (paths, bodies, queries)."""

from __future__ import annotations

import uuid

from ..errors import InvalidInput


def parse_canonical_uuid(text, field: str) -> str:
    """`text` if it is a UUID in canonical form (lowercase, hyphens), else
    `InvalidInput` with code `invalid_<field>`. One spelling per id, so two
    strings can never name one thing."""
    try:
        if isinstance(text, str) and str(uuid.UUID(text)) == text:
            return text
    except ValueError:
        pass
    raise InvalidInput(f"invalid_{field}", f"{field} must be a UUID in lowercase canonical form.")
