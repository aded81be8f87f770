"""A token bucket per key: what the fleet server holds each client address to when it
enrols. Enrolment is the one call a party the server does not know may make (in a
group without a token, anyone), and each one it accepts is a row kept for good, so
one address may not make them faster than a fleet's hosts booting behind one NAT do.

Pure: the caller passes the time. Memory is bounded by ``max_keys``: the address
seen least recently is forgotten first (it starts again with a full bucket).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, per_minute: int, max_keys: int = 65536) -> None:
        if per_minute < 1 or max_keys < 1:
            raise ValueError("a rate limit needs per_minute >= 1 and max_keys >= 1")
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._rate = per_minute / 60.0  # tokens per second; a full bucket is one minute's worth
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Spend one of ``key``'s tokens: 0.0 if it had one, else the seconds until it will.
        A refused call spends nothing, so retrying at the given time succeeds."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.per_minute), now)
        else:
            # max(): a clock set back (the test clock) refills nothing and takes nothing.
            refill = max(0.0, now - bucket.at) * self._rate
            bucket.tokens = min(float(self.per_minute), bucket.tokens + refill)
            bucket.at = max(bucket.at, now)
        wait = 0.0
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
        else:
            wait = (1.0 - bucket.tokens) / self._rate
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
