"""Token buckets per key, on an injected clock: bursts, refill, Retry-After, bounded memory."""

from __future__ import annotations

import pytest

from ferryman.security import RateLimiter


class Clock:
    """Monotonic seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_burst_passes_then_the_next_request_learns_when_to_retry(clock: Clock) -> None:
    limiter = RateLimiter(rate_per_s=2, burst=5, clock=clock)
    assert [limiter.acquire("k") for _ in range(5)] == [None] * 5
    assert limiter.acquire("k") == pytest.approx(0.5)
    assert limiter.acquire("k") == pytest.approx(0.5), "a refused request takes no token"
    clock.now += 0.25
    assert limiter.acquire("k") == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.acquire("k") is None
    assert limiter.acquire("k") == pytest.approx(0.5)


def test_refill_is_capped_at_the_burst(clock: Clock) -> None:
    limiter = RateLimiter(rate_per_s=10, burst=3, clock=clock)
    assert limiter.acquire("k") is None
    clock.now += 3600
    assert [limiter.acquire("k") for _ in range(4)] == [None, None, None, pytest.approx(0.1)]


def test_keys_have_their_own_buckets(clock: Clock) -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, clock=clock)
    assert limiter.acquire("a") is None
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") is None


def test_costs_above_one(clock: Clock) -> None:
    limiter = RateLimiter(rate_per_s=4, burst=8, clock=clock)
    assert limiter.acquire("k", cost=6) is None
    assert limiter.acquire("k", cost=4) == pytest.approx(0.5)
    assert limiter.acquire("k", cost=2) is None
    for bad in (0, -1, 9):
        with pytest.raises(ValueError, match="cost must be in"):
            limiter.acquire("k", cost=bad)


def test_idle_buckets_that_refilled_are_dropped(clock: Clock) -> None:
    limiter = RateLimiter(rate_per_s=1, burst=2, clock=clock)
    for key in ("a", "b", "c"):
        limiter.acquire(key)
    assert len(limiter) == 3
    clock.now += 2  # every bucket is full again: the same as having none
    for _ in range(3):
        limiter.acquire("d")
    assert len(limiter) == 1
    clock.now += 1.9
    limiter.acquire("e")
    assert len(limiter) == 2, "'d' has not refilled yet, so it stays"


def test_memory_is_capped_dropping_the_least_recently_used(clock: Clock) -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_buckets=3, clock=clock)
    for key in ("a", "b", "c"):
        assert limiter.acquire(key) is None
    assert limiter.acquire("a") is not None  # "a" is now the most recently used
    assert limiter.acquire("d") is None  # evicts "b", the least recently used
    assert len(limiter) == 3
    assert limiter.acquire("a") is not None and limiter.acquire("c") is not None
    # "b" lost its empty bucket to the cap, so it gets a fresh burst: memory wins over exactness.
    assert limiter.acquire("b") is None
    for n in range(1000):
        limiter.acquire(f"flood{n}")
        assert len(limiter) <= 3


def test_bad_settings_are_refused() -> None:
    for rate, burst, message in ((0, 1, "rate_per_s"), (float("inf"), 1, "rate_per_s"), (1, 0.5, "burst")):
        with pytest.raises(ValueError, match=message):
            RateLimiter(rate_per_s=rate, burst=burst)
    with pytest.raises(ValueError, match="max_buckets"):
        RateLimiter(rate_per_s=1, burst=1, max_buckets=0)
