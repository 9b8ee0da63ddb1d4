"""Opaque cursors for keyset pagination: the sort key of the last item of a
page, so the next page starts after it however many rows arrive meanwhile."""

from __future__ import annotations

import base64
import binascii
import json

from ..errors import InvalidInput


def make_cursor(kind: str, *values) -> str:
    """A cursor naming its list (`kind`) and the last item's sort key."""
    return base64.urlsafe_b64encode(json.dumps([kind, *values], separators=(",", ":")).encode()).rstrip(b"=").decode()


def read_cursor(kind: str, cursor, types: tuple[type, ...]) -> tuple:
    """The sort key in a cursor made by `make_cursor(kind, ...)`; raises
    `InvalidInput` for anything else (another list's cursor included)."""
    try:
        if isinstance(cursor, str) and len(cursor) <= 512:
            decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            if (isinstance(decoded, list) and len(decoded) == len(types) + 1 and decoded[0] == kind
                    and all(type(value) is wanted and _in_range(value)
                            for value, wanted in zip(decoded[1:], types))):
                return tuple(decoded[1:])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    raise InvalidInput("invalid_cursor", "cursor must be the next_cursor of an earlier answer from the same list.")


def _in_range(value) -> bool:
    # Integers must fit SQLite's; text must be short and real Unicode.
    if isinstance(value, int):
        return 0 <= value < 2**62
    if isinstance(value, str):
        return len(value) <= 200 and value.isprintable()
    return True


def split_page(rows: list, limit: int, cursor_of) -> tuple[list, str | None]:
    """Rows fetched with `LIMIT limit + 1` -> `(page, next_cursor)`: the
    extra row only tells that more follow; `cursor_of(last row)` makes the
    cursor, None on the last page."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, cursor_of(page[-1])


def newest_first_page(database, table: str, where: list[str], params: list, *, kind: str, limit: int,
                      cursor: str | None) -> tuple[list[dict], str | None]:
    """A page of `table`'s rows matching `where` (SQL conditions joined by
    AND, with `params`), newest first by `(created_at, id)`, and the next
    page's cursor. `InvalidInput` for a malformed cursor."""
    where, params = list(where), list(params)
    if cursor is not None:
        created_at, last_id = read_cursor(kind, cursor, (str, str))
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        params += [created_at, created_at, last_id]
    rows = database.query(
        f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?",
        [*params, limit + 1])
    return split_page(rows, limit, lambda last: make_cursor(kind, last["created_at"], last["id"]))
