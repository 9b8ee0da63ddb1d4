"""The client of external RFC 3161 time-stamping authorities
(`WITNESS_TSA_URL`: one or several, asked in order): one request, one
verified token. Manifests (`timestamps.py`) and the transparency log's
checkpoints (`transparency.py`) both get their external tokens here."""

from __future__ import annotations

import secrets

import requests

from crypto.tsa import TimeStampFacts, TimeStampInvalid, time_stamp_request, verify_time_stamp_reply

REQUEST_TIMEOUT = (5.0, 30.0)  # seconds to connect, seconds between bytes of the answer
MAX_REPLY_BYTES = 256 * 1024  # a token with a long chain is a few KiB


MAX_RETRY_DELAY_SECONDS = 300.0


class RetryPause:
    """When a job that asks a TSA may ask again: right away while it
    answers; after a failure, `first_seconds` later, doubling with each
    failure in a row up to `MAX_RETRY_DELAY_SECONDS`, so a TSA that is down
    (or a public one that rate-limits) is not asked every tick."""

    def __init__(self, first_seconds: float, monotonic):
        self.first_seconds, self._monotonic = first_seconds, monotonic
        self.failures, self._next_attempt = 0, 0.0

    def due(self) -> bool:
        return self._monotonic() >= self._next_attempt

    def failed(self) -> None:
        delay = min(self.first_seconds * 2 ** self.failures, MAX_RETRY_DELAY_SECONDS)
        self.failures += 1
        self._next_attempt = self._monotonic() + delay

    def succeeded(self) -> bool:
        """Forget the failures; True if there were any (the TSA is back)."""
        recovered = self.failures > 0
        self.failures, self._next_attempt = 0, 0.0
        return recovered


class TsaUnavailable(Exception):
    """The external TSA could not be reached or did not answer with a reply."""


def ask_external_tsas(urls: tuple[str, ...], digest: bytes, chain_pem: bytes) -> tuple[str, bytes, TimeStampFacts]:
    """A verified token over `digest` from the first of `urls` that gives
    one: `(url, reply, facts)`. A TSA that is down is passed over for the
    next. Raises `TsaUnavailable` when none answered, `TimeStampInvalid`
    (naming the TSA) when one answered with a reply that does not verify."""
    problems = []
    for url in urls:
        nonce = secrets.randbits(64) | 1  # positive, never zero
        try:
            reply = _ask(url, time_stamp_request(digest, nonce))
        except TsaUnavailable as exc:
            problems.append(f"the time-stamping authority at {url} is unavailable: {exc}")
            continue
        try:
            return url, reply, verify_time_stamp_reply(reply, digest, nonce, chain_pem)
        except TimeStampInvalid as exc:
            raise TimeStampInvalid(f"the reply of {url} does not verify: {exc}") from exc
    raise TsaUnavailable("; ".join(problems) or "no external time-stamping authority is configured")


def _ask(url: str, query: bytes) -> bytes:
    try:
        with requests.post(url, data=query, timeout=REQUEST_TIMEOUT, stream=True,
                           headers={"Content-Type": "application/timestamp-query",
                                    "Accept": "application/timestamp-reply"}) as answer:
            if answer.status_code != 200:
                raise TsaUnavailable(f"it answered HTTP {answer.status_code}")
            body = bytearray()
            for piece in answer.iter_content(64 * 1024):
                body += piece
                if len(body) > MAX_REPLY_BYTES:
                    raise TsaUnavailable(f"its answer is larger than {MAX_REPLY_BYTES} bytes")
            return bytes(body)
    except requests.RequestException as exc:
        raise TsaUnavailable(type(exc).__name__ + (f" ({exc})" if str(exc) else "")) from exc
