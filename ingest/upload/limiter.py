"""The run's one rate limiter: every attempt, retries included, passes ``RateLimiter.acquire()``.

Three layers, each for a reason:

1. **Pacing** — an ``aiolimiter.AsyncLimiter`` leaky bucket of capacity ``burst`` draining at the *effective* rate.
   ``AsyncLimiter(rate, 1)`` would let ``2 × rate`` through in the first second (a full bucket, then a second's
   worth of leak); ``AsyncLimiter(1, 1/rate)`` loses throughput to timer lateness (a capacity of one cannot absorb
   a late wake-up). A small capacity (``burst``, default 2% of the rate, at least 2) keeps requests smooth and
   absorbs scheduling jitter; while the server's pushback holds the rate below the configured one, the capacity
   is one: strict pacing, no bursts.
2. **Hard cap** — a sliding window over the last ``floor(rate)`` request times: no one-second window, the first
   one included, ever holds more than the configured rate, whatever the bucket allows. The window is 10 ms longer
   than a second so that the bound still holds as seen by the server, after the scheduling jitter between our
   clock reading and the request leaving (it costs at most 1% of throughput, and only while the cap binds).
   Above ``WINDOW_LOG_MAX`` requests/s the log is not kept (it would hold that many times): there the bucket's own
   bound applies, at most ``rate + burst`` (≈ 1.02 × rate) in any second.
3. **Server feedback** — ``pause(seconds)`` holds every consumer until the server's time has passed (429 /
   Retry-After), and the effective rate drops multiplicatively (×``decrease``); after ``recovery_interval``
   seconds without a throttle it climbs back additively (``+increase × rate`` per interval), never above the
   configured rate (AIMD, as in TCP congestion control, RFC 5681 §3.1).
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable

import anyio
from aiolimiter import AsyncLimiter

WINDOW = 1.0 + 0.010  # seconds; see "Hard cap" above
WINDOW_LOG_MAX = 10_000  # requests/s above which the hard-cap log is not kept


class RateLimiter:
    """Shared by every consumer of one run; see the module docstring."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        decrease: float = 0.5,
        increase: float = 0.1,
        recovery_interval: float = 2.0,
        min_rate_fraction: float = 1 / 10,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._clock = clock  # monotonic seconds (a fake clock in tests)
        self._sleep = sleep  # waits for pauses and the hard-cap window (a fake clock's sleep in tests)
        self.rate = rate  # the configured ceiling, requests/s
        self.burst = burst if burst is not None else max(2.0, rate * 0.02)  # bucket capacity
        self.decrease = decrease  # multiplicative factor applied on each throttle
        self.increase = increase  # fraction of `rate` regained per quiet interval
        self.recovery_interval = recovery_interval  # seconds without a throttle before climbing back
        self.min_rate = max(rate * min_rate_fraction, 0.05)  # floor of the effective rate
        self.effective_rate = rate  # current pacing rate, ≤ rate
        self.paused_until = 0.0  # monotonic time before which nobody may send
        self.paused_seconds = 0.0  # total time consumers were held by server pauses (for progress/metrics)
        self.throttles = 0  # how many throttle signals were received
        self.acquired = 0  # how many requests were let through
        self._window_cap = max(1, math.floor(rate))  # most requests allowed in any 1 s window
        # the last send times (none kept above WINDOW_LOG_MAX; see the module docstring)
        self._window: collections.deque[float] = collections.deque(maxlen=self._window_cap)
        self._keep_window = rate <= WINDOW_LOG_MAX
        self._bucket = self._new_bucket(rate)  # the pacing leaky bucket at the effective rate
        # Serialises acquisitions so the window check and append are atomic. asyncio's Lock, not anyio's: anyio's
        # takes two scheduler checkpoints on every acquire even when free, i.e. two loop iterations per request;
        # aiohttp and aiolimiter tie the run to asyncio anyway.
        self._lock = asyncio.Lock()
        self._last_change = self._clock()  # when the effective rate last moved (for recovery)
        self._last_decrease = -math.inf  # when the effective rate was last cut (to merge a burst of 429s)

    def _new_bucket(self, rate: float) -> AsyncLimiter:
        # After the server pushed back (effective rate below the configured one), pace strictly with a bucket of
        # one: a burst on top of a rate right at the server's limit is exactly what trips its bucket again (the
        # throttle chaos test went from 3 to 18 429s with a bucket of 2). At full rate the larger bucket absorbs
        # timer lateness (a bucket of one delivers ~0.95x at 50/s).
        capacity = 1.0 if rate < self.rate else min(self.burst, max(1.0, rate))
        return AsyncLimiter(capacity, capacity / rate)

    @property
    def bucket_capacity(self) -> float:
        """How many requests the pacing bucket lets through back to back (1 while the server pushes back)."""
        return float(self._bucket.max_rate)

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self.rate}, effective_rate={self.effective_rate:.2f}, burst={self.burst}, "
            f"acquired={self.acquired}, throttles={self.throttles}, paused_seconds={self.paused_seconds:.2f})"
        )

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        async with self._lock:
            await self._wait_for_pause()
            self._maybe_recover()
            await self._bucket.acquire()
            if self._keep_window:
                await self._wait_for_window()
                self._window.append(self._clock())
            self.acquired += 1

    async def _wait_for_pause(self) -> None:
        # Not a busy wait: each sleep lasts the whole remaining pause; the loop only re-checks because another
        # 429 may have pushed `paused_until` further while we slept.
        while (remaining := self.paused_until - self._clock()) > 0:
            await self._sleep(remaining)
            self.paused_seconds += remaining

    async def _wait_for_window(self) -> None:
        window = self._window
        # Sleeps exactly until the oldest send leaves the window; no event would fire sooner.
        while len(window) == window.maxlen and (wait := window[0] + WINDOW - self._clock()) > 0:
            await self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """The server asked everyone to wait ``seconds``: hold all consumers and slow down."""
        now = self._clock()
        self.paused_until = max(self.paused_until, now + max(0.0, seconds))
        self.throttle()

    def throttle(self) -> None:
        """Cut the effective rate multiplicatively (at most once per ~second of throttles in a burst)."""
        self.throttles += 1
        now = self._clock()
        # Many consumers get their 429 at once: count them as one congestion signal per pacing interval.
        if now - self._last_decrease < min(1.0, self.recovery_interval):
            return
        self._last_decrease = now
        self._set_rate(max(self.min_rate, self.effective_rate * self.decrease), now)

    def _maybe_recover(self) -> None:
        if self.effective_rate >= self.rate:
            return
        now = self._clock()
        if now - self._last_change >= self.recovery_interval and now >= self.paused_until:
            self._set_rate(min(self.rate, self.effective_rate + self.rate * self.increase), now)

    def _set_rate(self, rate: float, now: float) -> None:
        self.effective_rate = rate
        self._last_change = now
        self._bucket = self._new_bucket(rate)
