"""Token buckets kept in memory, one per key: how abuse limits slow a client
down without ever writing anything about it to disk.

A bucket holds at most `burst` tokens and gains `rate` tokens a second; each
request takes one. A request finding the bucket empty is refused and told how
long until a token is there (`Retry-After`). A bucket that has refilled to
`burst` is the same as no bucket at all, so it is forgotten: memory holds only
the keys that were busy lately, and never more than `max_keys` of them (the
least recently used are dropped first, which can only be lenient: a dropped
key starts again with a full bucket).

State lives in this process only: several gunicorn workers each keep their
own buckets. Nothing here is logged or stored.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable

DEFAULT_MAX_KEYS = 100_000


class TokenBuckets:
    """One token bucket per key, thread-safe, bounded in memory."""

    def __init__(self, burst: float, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = DEFAULT_MAX_KEYS):
        if burst < 1 or rate <= 0 or max_keys < 1:
            raise ValueError("a token bucket needs burst >= 1, rate > 0 and max_keys >= 1")
        self.burst, self.rate, self.max_keys = float(burst), float(rate), max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (tokens, when they were counted), least recently used first.
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, key: Hashable) -> float:
        """Take a token for `key`. Returns 0.0 when the request may go on,
        else the seconds until the bucket holds a token again (nothing taken)."""
        with self._lock:
            now = self._clock()
            tokens = self._tokens(key, now)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                self._buckets.move_to_end(key)
                self._forget_idle(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            return (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def _tokens(self, key: Hashable, now: float) -> float:
        held = self._buckets.get(key)
        if held is None:
            return self.burst
        tokens, since = held
        return min(self.burst, tokens + max(0.0, now - since) * self.rate)

    def _forget_idle(self, now: float) -> None:
        # The least recently used buckets are the likeliest to be full again;
        # drop those that are (amortized: each key is dropped once), then any
        # beyond the bound.
        while self._buckets:
            key, (tokens, since) = next(iter(self._buckets.items()))
            if len(self._buckets) <= self.max_keys and tokens + (now - since) * self.rate < self.burst:
                break
            del self._buckets[key]


def whole_seconds(wait: float) -> int:
    """A `Retry-After` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))
