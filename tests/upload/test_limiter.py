"""The shared rate limiter: never over the configured rate in any 1 s window, pauses, and AIMD."""

from __future__ import annotations

import bisect
import time

import anyio
import pytest

from ingest.upload.limiter import RateLimiter
from tests.helpers.clock import FakeClock

pytestmark = pytest.mark.anyio


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any half-open window [t, t + window) starting at an event."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


async def _hammer(limiter: RateLimiter, count: int, workers: int) -> list[float]:
    times: list[float] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            await limiter.acquire()
            times.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        for i in range(workers):
            tg.start_soon(worker, count // workers + (1 if i < count % workers else 0))
    return times


@pytest.mark.parametrize(("rate", "count"), [(20, 50), (200, 500)])
async def test_never_over_rate_in_any_window_first_included(rate: float, count: int) -> None:
    """However many consumers push, no sliding one-second window, the first included, holds more than `rate`."""
    times = await _hammer(RateLimiter(rate), count, workers=16)
    assert len(times) == count
    assert max_in_window(times) <= rate
    first = min(times)
    assert sum(1 for t in times if t < first + 1.0) <= rate


async def test_large_burst_setting_still_capped() -> None:
    """Even a bucket as large as the rate cannot push a window past the configured rate."""
    times = await _hammer(RateLimiter(50, burst=50), 120, workers=8)
    assert max_in_window(times) <= 50


async def test_pause_holds_every_consumer() -> None:
    """After pause(s), no consumer acquires before s seconds have passed (on a fake clock)."""
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    started = clock()
    limiter.pause(0.3)
    times: list[float] = []

    async def consumer() -> None:
        await limiter.acquire()
        times.append(clock())

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(consumer)
    assert len(times) == 5
    assert min(times) - started >= 0.29
    assert limiter.paused_seconds >= 0.29


async def test_pauses_extend_not_shorten() -> None:
    """A shorter pause announced during a longer one does not cut it short."""
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock, sleep=clock.sleep)
    started = clock()
    limiter.pause(0.3)
    limiter.pause(0.05)
    await limiter.acquire()
    assert clock() - started >= 0.29


def test_throttle_is_multiplicative_and_merged() -> None:
    """A throttle halves the effective rate once; a burst of 429s within a second counts as one signal."""
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    limiter.throttle()
    assert limiter.effective_rate == 50
    clock.advance(0.5)
    limiter.throttle()
    limiter.throttle()
    assert limiter.effective_rate == 50
    assert limiter.throttles == 3


async def test_recovery_is_additive_and_capped() -> None:
    """After a quiet interval the effective rate climbs by a fraction of the rate, never above the rate."""
    clock = FakeClock()
    limiter = RateLimiter(100, recovery_interval=0.05, increase=0.3, clock=clock, sleep=clock.sleep)
    limiter.throttle()
    assert limiter.effective_rate == 50
    for expected in (80, 100, 100):
        clock.advance(0.06)
        await limiter.acquire()
        assert limiter.effective_rate == pytest.approx(expected)


def test_floor_of_effective_rate() -> None:
    """Repeated throttles never take the effective rate below its floor."""
    clock = FakeClock()
    limiter = RateLimiter(100, min_rate_fraction=0.1, recovery_interval=0, clock=clock)
    for _ in range(20):
        clock.advance(10)  # throttles far apart in time: each one cuts
        limiter.throttle()
    assert limiter.effective_rate == pytest.approx(10)


def test_repr_shows_state() -> None:
    """The limiter's repr shows its live state."""
    text = repr(RateLimiter(10))
    assert "effective_rate=10.00" in text and "acquired=0" in text


def test_rejects_non_positive_rate() -> None:
    """A zero or negative rate is a programming error."""
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)


def test_strict_pacing_after_server_pushback() -> None:
    """At full rate the bucket holds a small burst; once the server pushed back, it holds one (no bursts)."""
    limiter = RateLimiter(100)
    assert limiter.bucket_capacity == 2
    limiter.throttle()
    assert limiter.effective_rate == 50 and limiter.bucket_capacity == 1
