"""The run's one rate limiter: every attempt, retries included, passes ``RateLimiter.acquire()``.

Four layers, each for a reason:

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
3. **Server feedback** — every answer is reported (``observe``). A 429 always makes its own item wait its
   ``Retry-After`` (the consumer sleeps); it slows the run only when the pattern of recent answers says the account
   is limited (``ingest.upload.throttle``): random 429s delay their own items and nothing else. On the first sign of a
   limit, ``pause(seconds)`` holds every consumer until the server's time has passed and the rate is cut (a margin
   below ×``decrease``: the server's rate is not measurable yet); while limited, each 429 to a request sent after the
   latest cut cuts again (at most once a second, TCP-like: a 429 to a request already in flight when we cut says
   nothing new; nor does one before the rate since the cut can be measured), to just below the rate the server
   accepted since the previous cut (never below ×``decrease``). After ``recovery_interval`` seconds without a cut
   the rate climbs back additively (``+increase × rate`` per interval; a fifth of that while limited, to probe
   gently) up to just below the last measured limit, where it holds ``PLATEAU`` seconds before probing above it,
   never above the ceiling (AIMD, as in TCP congestion control, RFC 5681 §3.1). If halving the rate did not lower
   the share of 429s, they were noise: the limiter leaves the limited state and restores its rate.
4. **Announced limits** — ``advise(quota)`` with what an answer's ``RateLimit-Policy`` / ``RateLimit`` headers say
   (``ingest.upload.quota``): the policy's rate, ``HEADROOM`` below, is the ceiling (never above the configured
   rate), and a spent quota (``r=0``, ``t=N``) holds every consumer N seconds.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable

import anyio
from aiolimiter import AsyncLimiter

from ingest.upload.quota import Quota
from ingest.upload.throttle import LimitDetector

WINDOW = 1.0 + 0.010  # seconds; see "Hard cap" above
WINDOW_LOG_MAX = 10_000  # requests/s above which the hard-cap log is not kept
PLATEAU = 15.0  # seconds the rate holds just below a measured server limit before probing above it again
HEADROOM = 0.03  # an announced ceiling (q / w) is paced this fraction below, as a measured limit is


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
        self.detector = LimitDetector(now=self._clock())  # the pattern of recent answers
        self.limited = False  # the pattern says the account is over its rate: 429s slow the run
        self._limited_from = rate  # the effective rate when the limited state began (restored if it was noise)
        self.ceiling = rate  # the highest effective rate: --rate, or below it what the server's policy announces
        self.known_limit: float | None = None  # the server's rate as measured at the latest cut, if it was
        self._pause_began = -math.inf  # when the latest quota pause was set (answers sent before it say nothing new)

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
            self.recover()
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

    def observe(self, *, sent_at: float, throttled: bool, wait: float | None) -> bool:
        """Count one answer to a request sent at ``sent_at``; ``throttled``: a 429 (or 503 with a hint) asking for
        ``wait`` seconds. True when it paused the whole run (the item's own wait is then covered by the pause)."""
        now = self._clock()
        if not self.limited:
            self.detector.observe(throttled, now)
            if not (throttled and self.detector.pattern()):
                return False
            self.limited, self._limited_from = True, self.effective_rate
            self.pause(wait or 0.0)
            self.detector.clear()
            return True
        if sent_at < self._last_decrease:
            return False  # sent before the latest cut: already answered for
        self.detector.observe(throttled, now)
        if self.detector.cut_did_not_help() and self.effective_rate <= self._limited_from / 2:
            self.limited = False  # the share of 429s did not follow the rate: noise, not a limit
            self._set_rate(min(self.ceiling, self._limited_from), now)
            self.detector.clear()
            return False
        if throttled:
            self.throttle(measured_only=True)
        return False

    def pause(self, seconds: float) -> None:
        """The server asked everyone to wait ``seconds``: hold all consumers and slow down."""
        now = self._clock()
        self.paused_until = max(self.paused_until, now + max(0.0, seconds))
        self.throttle()

    def throttle(self, *, measured_only: bool = False) -> None:
        """Cut the effective rate multiplicatively (at most once per ~second of throttles in a burst). With
        ``measured_only`` (a 429 while limited), only when the rate the server accepted since the previous cut can
        be measured: a 429 right after a pause or a cut says nothing new of the server's rate (and halving again on
        it collapsed a run that random 429s had made look limited, before their share could show they were noise)."""
        self.throttles += 1
        now = self._clock()
        # Many consumers get their 429 at once: count them as one congestion signal per pacing interval.
        if now - self._last_decrease < min(1.0, self.recovery_interval):
            return
        landing = self.effective_rate * self.decrease
        if self.limited:
            since = max(self._last_decrease, self.paused_until)  # since the previous cut (a pause is silent)
            if measured_only and self.detector.accepted_rate(now, since) is None:
                return
            landing, measured = self.detector.landing_rate(self.effective_rate, self.decrease, now=now, since=since)
            self.known_limit = measured if measured is not None else self.known_limit
        self._last_decrease = now
        self._set_rate(min(self.ceiling, max(self.min_rate, landing)), now)
        if self.limited:
            self.detector.clear()  # from now on, only answers to requests sent after this cut count

    def advise(self, quota: Quota, *, sent_at: float, throttled: bool) -> None:
        """What the server announced (``RateLimit-Policy`` / ``RateLimit``): its policy's rate is a ceiling (a
        ``HEADROOM`` below), and a spent quota (``r=0``, ``t=N``) holds every consumer N seconds. A 429's own
        ``r=0`` is not taken as the account's: that is the pattern's to say (``observe``), as for any 429."""
        now = self._clock()
        if quota.ceiling is not None:
            ceiling = min(self.rate, max(quota.ceiling * (1 - HEADROOM), 0.05))
            if ceiling != self.ceiling:
                pinned = self.effective_rate >= self.ceiling  # held down by the old ceiling only
                self.ceiling = ceiling
                if self.effective_rate > ceiling or (pinned and not self.limited):
                    self._set_rate(ceiling, now)
        if quota.exhausted_for and not throttled and not (sent_at < self._pause_began < self.paused_until):
            self.paused_until = max(self.paused_until, now + quota.exhausted_for)
            self._pause_began = now

    def recover(self) -> None:
        """Let the effective rate climb back if it is time (``acquire`` calls it before every request)."""
        if self.effective_rate >= self.ceiling:
            return
        now = self._clock()
        if now - self._last_change >= self.recovery_interval and now >= self.paused_until:
            top = self.ceiling
            if self.limited and self.known_limit is not None:
                # Climb to just below the measured limit; above it, probe only after a plateau (TCP CUBIC's idea:
                # the last limit is where the loss was, so the rate lingers below it).
                below = self.known_limit * (1 - self.detector.margin)
                if self.effective_rate < below:
                    top = min(top, below)
                elif now - self._last_decrease < PLATEAU:
                    return
            step = self.rate * self.increase / (5 if self.limited else 1)
            self._set_rate(min(top, self.effective_rate + step), now)

    def _set_rate(self, rate: float, now: float) -> None:
        self.effective_rate = rate
        self._last_change = now
        self._bucket = self._new_bucket(rate)
