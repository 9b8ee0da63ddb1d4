"""Reading canonical JSON back: what was signed is exact bytes
(`crypto.hashing.canonical_json`), so a reader accepts only those bytes."""

from __future__ import annotations

import json

from crypto.hashing import canonical_json


class MalformedEvidence(ValueError):
    """Bytes that are not what their format requires; the message is a
    sentence naming the file or line and what is wrong with it."""


def read_canonical_object(raw: bytes, what: str) -> dict:
    """The JSON object `raw` holds, if `raw` is exactly its canonical form.
    `what` names it in the message (`copy.json`, `line 3 of the custody
    log`). Raises `MalformedEvidence` for anything else."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than any genuine file
        raise MalformedEvidence(f"{what} is not JSON") from None
    try:
        canonical = isinstance(value, dict) and canonical_json(value) == raw
    except ValueError:  # NaN or Infinity, which canonical JSON never holds
        canonical = False
    if not canonical:
        raise MalformedEvidence(f"{what} is not in canonical form, so it is not the exact bytes that were signed")
    return value
