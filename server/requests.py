"""Reading the wire: JSON bodies, path ids, query parameters and the
protocol's headers, into the plain values the domain's commands take."""

from __future__ import annotations

import base64
import binascii
import re

from flask import request

from sync.domain.ingest import MAX_CHUNK_INDEX, parse_recording_id
from sync.errors import InvalidInput
from sync.timefmt import normalize_time

MAX_JSON_BYTES = 64 * 1024
# RFC 9110 media-type: type "/" subtype *( OWS ";" OWS token "=" ( token / quoted-string ) ),
# ASCII only (it goes back out in a Content-Type header). Commas are allowed
# in a token value because browsers write codecs=vp8,opus unquoted.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
RECORDING_MEDIA_TYPE = re.compile(
    rf"(?:video|audio)/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:[!#$%&'*+.^_`|~0-9A-Za-z,-]+|{_QUOTED}))*",
    re.I | re.ASCII)
_DIGEST_MEMBER = re.compile(r"^\s*([a-z0-9-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*$")


def json_body() -> dict:
    """The request's JSON object; `InvalidInput` for anything else."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise InvalidInput("body_too_large", f"JSON bodies are at most {MAX_JSON_BYTES} bytes.")
    # Enforced while reading too, for bodies sent without a Content-Length.
    # werkzeug stops a limited stream at the limit and returns what it read
    # without an error, so read one byte more than allowed and look.
    request.max_content_length = MAX_JSON_BYTES + 1
    if len(request.get_data(cache=True)) > MAX_JSON_BYTES:
        raise InvalidInput("body_too_large", f"JSON bodies are at most {MAX_JSON_BYTES} bytes.")
    if not request.is_json:
        raise InvalidInput("invalid_body", "Send a JSON object with Content-Type: application/json.")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser will go
        body = None
    if not isinstance(body, dict):
        raise InvalidInput("invalid_body", "The body must be a JSON object.")
    if not _is_unicode_text(body):
        raise InvalidInput("invalid_body", "The body holds a \\u escape that is not Unicode text (a lone "
                                           "surrogate); send valid UTF-8.")
    return body


def _is_unicode_text(value) -> bool:
    # JSON may spell lone surrogates ("\ud800"), which are not text: they
    # cannot be encoded to UTF-8 for the records or hashed as passwords.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_is_unicode_text(k) and _is_unicode_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_unicode_text(item) for item in value)
    return True


def has_body() -> bool:
    """True if the request carries a body (with a length, or chunked)."""
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def path_recording_id(text: str) -> str:
    """A recording id from the path, validated as a canonical UUID."""
    return parse_recording_id(text)


def path_chunk_index(text: str) -> int:
    """A chunk index from the path: decimal digits, no sign, no leading zeros."""
    if not text.isascii() or not text.isdigit() or len(text) > 10 or (len(text) > 1 and text[0] == "0") \
            or int(text) > MAX_CHUNK_INDEX:
        raise InvalidInput("invalid_index", f"The chunk index must be an integer from 0 to {MAX_CHUNK_INDEX}.")
    return int(text)


def query_positive_int(name: str) -> int | None:
    """An optional positive integer query parameter."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise InvalidInput(f"invalid_{name}", f"{name} must be a positive integer.")
    return int(raw)


def query_limit(default: int = 50, maximum: int = 200) -> int:
    """The `limit` query parameter: 1..maximum, default `default`."""
    limit = query_positive_int("limit")
    if limit is None:
        return default
    if limit > maximum:
        raise InvalidInput("invalid_limit", f"limit must be from 1 to {maximum}.")
    return limit


def query_bool(name: str) -> bool | None:
    """An optional `true`/`false` query parameter."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise InvalidInput(f"invalid_{name}", f"{name} must be true or false.")


def query_time(name: str) -> str | None:
    """An optional RFC 3339 time query parameter, normalized."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return normalize_time(raw)
    except (ValueError, TypeError):
        raise InvalidInput(f"invalid_{name}", f"{name} must be an RFC 3339 time, e.g. 2026-11-21T14:03:07.123Z "
                                              "(URL-encode the '+' of an offset).") from None


def query_text(name: str, max_chars: int = 200) -> str | None:
    """An optional short text query parameter."""
    raw = request.args.get(name)
    if raw is not None and (len(raw) > max_chars or not raw):
        raise InvalidInput(f"invalid_{name}", f"{name} must be 1 to {max_chars} characters.")
    return raw


def content_digest_sha256(header: str | None) -> bytes:
    """The SHA-256 digest from an RFC 9530 `Content-Digest` field
    (`sha-256=:<base64>:`, possibly among other algorithms).
    Raises `InvalidInput` if absent or malformed."""
    if not header:
        raise InvalidInput("missing_digest", "Content-Digest: sha-256=:<base64 SHA-256 of the body>: is required.")
    for member in header.split(","):
        match = _DIGEST_MEMBER.match(member)
        if not match:
            break
        if match.group(1).lower() == "sha-256":
            try:
                digest = base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                break
            if len(digest) == 32:
                return digest
            break
    raise InvalidInput("invalid_digest", "Content-Digest must carry sha-256=:<base64 of 32 bytes>: (RFC 9530).")


def final_flag(header: str | None) -> bool:
    """`Witness-Final`, an RFC 8941 boolean: ?1 or ?0 (absent: ?0)."""
    if header is None or header.strip() == "?0":
        return False
    if header.strip() == "?1":
        return True
    raise InvalidInput("invalid_final", "Witness-Final must be the structured boolean ?1 (or ?0).")


def header_time(header: str | None, code: str, name: str) -> str | None:
    """An optional RFC 3339 time header, normalized."""
    if header is None:
        return None
    try:
        return normalize_time(header)
    except (ValueError, TypeError):
        raise InvalidInput(code, f"{name} must be an RFC 3339 time.") from None
