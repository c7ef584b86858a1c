"""Telling a limit from noise (issue 13): random 429s delay only their items, a pattern slows the run once."""

from __future__ import annotations

import random

from ingest.fakeserver.ratelimit import TokenBucket
from ingest.upload.limiter import RateLimiter
from ingest.upload.throttle import LimitDetector
from tests.helpers.clock import FakeClock


def _answer(limiter: RateLimiter, clock: FakeClock, *, throttled: bool, sent_ago: float = 0.05) -> bool:
    return limiter.observe(sent_at=clock() - sent_ago, throttled=throttled, wait=1.0 if throttled else None)


def test_random_429s_at_ten_percent_never_slow_the_run() -> None:
    """10% of 4,000 answers at 200/s are random 429s: no pause, no cut, the rate stays the configured one."""
    clock, rng = FakeClock(), random.Random(13)
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    paused = 0
    for _ in range(4000):
        clock.advance(1 / 200)
        paused += _answer(limiter, clock, throttled=rng.random() < 0.10)
    assert paused == 0
    assert limiter.effective_rate == 200 and not limiter.limited and limiter.paused_until == 0.0


def test_a_server_bucket_at_half_the_rate_converges_with_few_429s() -> None:
    """Against a token bucket of 100/s under a configured 200/s (the limiter's own pace, on a fake clock), the run
    is found limited at once, then settles just below the server's rate: few 429s, and most of the server's rate."""
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    bucket = TokenBucket(rate=100.0, burst=5, now=clock())
    started, answers, throttled, accepted = clock(), 0, 0, 0
    while clock() - started < 60:
        clock.advance(max(1 / limiter.effective_rate, limiter.paused_until - clock()))
        limited = bucket.take(clock()) > 0
        _answer(limiter, clock, throttled=limited, sent_ago=0.0)
        if clock() - started > 5:  # after the first seconds
            answers, throttled, accepted = answers + 1, throttled + limited, accepted + (not limited)
    assert limiter.limited
    assert throttled <= 0.02 * answers
    assert accepted / 55 >= 90  # requests/s the server accepted, of its 100


def test_a_429_to_a_request_sent_before_the_cut_does_not_cut_again() -> None:
    """Once limited, a 429 answering a request already in flight at the latest cut neither pauses nor cuts."""
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        clock.advance(0.01)
        _answer(limiter, clock, throttled=True, sent_ago=0.001)
    assert limiter.limited
    rate = limiter.effective_rate
    clock.advance(2.0)
    assert not _answer(limiter, clock, throttled=True, sent_ago=3.0)  # sent before the cut
    assert limiter.effective_rate == rate
    _answer(limiter, clock, throttled=True, sent_ago=0.001)  # sent after it: a fresh signal
    assert limiter.effective_rate < rate


def test_noise_that_does_not_follow_the_rate_restores_it() -> None:
    """If halving the rate leaves the share of 429s where it was, the limited state ends and the rate comes back."""
    clock, rng = FakeClock(), random.Random(5)
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    for _ in range(4):  # an unlucky start: four 429s in a row
        clock.advance(0.005)
        _answer(limiter, clock, throttled=True, sent_ago=0.001)
    assert limiter.limited
    for _ in range(20_000):
        clock.advance(0.005)
        _answer(limiter, clock, throttled=rng.random() < 0.10, sent_ago=0.001)
        if not limiter.limited:
            break
    assert not limiter.limited
    assert limiter.effective_rate == 200


def test_pattern_needs_four_or_a_third() -> None:
    """Three 429s in three answers are not yet a pattern; four are; over many answers, 35% is."""
    detector = LimitDetector(now=0.0)
    for _ in range(3):
        detector.observe(True, 0.0)
    assert not detector.pattern()
    detector.observe(True, 0.0)
    assert detector.pattern()
    detector.clear()
    for i in range(40):
        detector.observe(i % 20 < 7, 0.0)
    assert detector.pattern()
