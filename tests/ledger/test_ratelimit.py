"""The token bucket of ``ledger.ratelimit`` on a fake clock."""

from __future__ import annotations

import pytest

from ledger.errors import RateLimited
from ledger.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ratelimit_burst_then_refused_then_refilled() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, max_keys=10, clock=clock)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.retry_after_s == 1
    assert (refused.value.code, refused.value.status) == ("rate_limited", 429)
    limiter.take("b")  # another key has its own bucket
    clock.now += 0.5  # one token back
    limiter.take("a")
    with pytest.raises(RateLimited):
        limiter.take("a")
    clock.now += 100  # refills to the burst, no further
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(RateLimited):
        limiter.take("a")


def test_ratelimit_refusals_spend_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_keys=10, clock=clock)
    limiter.take("a")
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.take("a")
    clock.now += 1.0  # one second after the last success, not after the refusals
    limiter.take("a")


def test_ratelimit_retry_after_rounds_up() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=0.1, burst=1, max_keys=10, clock=clock)
    limiter.take("a")
    clock.now += 2.5
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.retry_after_s == 8  # 7.5 s to the next token


def test_ratelimit_holds_at_most_max_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1.0, burst=2, max_keys=4, clock=clock)
    for key in "abcd":
        limiter.take(key)
    clock.now += 0.5
    limiter.take("a")  # "a" is busier: refilled later
    clock.now += 1.6  # b, c, d are full again (2 s since), "a" is not
    limiter.take("e")  # a fifth key: the full buckets go, "a"'s stays
    assert set(limiter._buckets) == {"a", "e"}
    for key in "fgh":
        limiter.take(key)  # none full: all go when a fifth comes
    limiter.take("i")
    assert len(limiter._buckets) <= 4
