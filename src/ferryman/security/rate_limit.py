"""Per-key rate limits: a token bucket per key, bounded in memory, O(1) per request.

Each key's bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; a request takes one
(or ``cost``). A refused request takes nothing and learns how long until enough tokens are back:
the Retry-After of its 429.

Buckets live in an LRU-ordered dict. A bucket idle long enough to be full again is the same as
no bucket, so each call drops the least recently used one when it has refilled — memory follows
the keys active within one refill period. Past ``max_buckets`` the least recently used bucket is
dropped even if not full (its key gets a fresh burst: the bound on memory wins over exactness
under a flood of distinct keys).

Not thread-safe, by design: it is called from the event loop's thread only, where calls never
interleave, so it needs no lock. Use one limiter per thread (or per process) otherwise.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RateLimiter"]


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """Token buckets keyed by API key id (or any string); see the module docstring."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        max_buckets: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be at least 1, got {max_buckets!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.max_buckets = max_buckets
        self._clock = clock
        self._refill_s = self.burst / self.rate_per_s
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str, cost: float = 1.0) -> float | None:
        """Take ``cost`` tokens from ``key``'s bucket: None if allowed, else seconds until they are there."""
        if not 0 < cost <= self.burst:
            raise ValueError(f"cost must be in (0, burst={self.burst:g}], got {cost!r}")
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = buckets[key] = _Bucket(self.burst, now)
        else:
            buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate_per_s)
            bucket.updated = now
            self._drop_oldest_if_full(now)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return None
        return (cost - bucket.tokens) / self.rate_per_s

    def _make_room(self, now: float) -> None:
        self._drop_oldest_if_full(now)
        if len(self._buckets) >= self.max_buckets:
            self._buckets.popitem(last=False)

    def _drop_oldest_if_full(self, now: float) -> None:
        # One check per call keeps it O(1); the idle tail drains at the rate keys arrive.
        oldest = next(iter(self._buckets.values()), None)
        if oldest is not None and now - oldest.updated >= self._refill_s:
            self._buckets.popitem(last=False)
