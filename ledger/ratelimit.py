"""Per-key rate limits: a token bucket for each key (a worker's address from its bearer
token, a client's address from its voucher), held in this process only.

Each key may spend ``burst`` requests at once and earns ``rate_per_s`` back a second. The
state is a dict of ``key -> (tokens, at)``; taking a token is one lookup and some arithmetic,
under a lock (the API takes tokens on its event loop and, in the lean worker routes, on its
threadpool's threads). The dict holds
at most ``max_keys`` keys; past that, buckets that have filled up again (they carry no
state a fresh bucket lacks) are dropped, and if none have, all are.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ledger.errors import RateLimited


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one of ``key``'s tokens, or raise ``RateLimited`` (spending none)."""
        with self._lock:
            self._take(key)

    def _take(self, key: str) -> None:
        now = self.clock()
        found = self._buckets.get(key)
        if found is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            tokens = self.burst
        else:
            tokens = min(self.burst, found[0] + (now - found[1]) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            retry_after_s = max(1, math.ceil((1.0 - tokens) / self.rate_per_s))
            raise RateLimited(
                f"more than {self.rate_per_s:g} requests a second (burst {self.burst:g}) "
                f"for {key}; retry in {retry_after_s} s",
                retry_after_s=retry_after_s,
            )
        self._buckets[key] = (tokens - 1.0, now)

    def _evict(self, now: float) -> None:
        full_after_s = self.burst / self.rate_per_s
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after_s}
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()
