"""Telling a limit from noise (issue 13): random 429s delay only their items, a pattern slows the run once."""

from __future__ import annotations

import random

import pytest

from ingest.fakeserver.ratelimit import TokenBucket
from ingest.upload.limiter import RateLimiter
from ingest.upload.quota import Quota
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


def _against_bucket(
    limiter: RateLimiter, clock: FakeClock, bucket: TokenBucket, seconds: float, *, announce: bool = False
) -> list[tuple[float, bool, float]]:
    """The limiter's own pace against ``bucket`` for ``seconds`` of fake time: (time, throttled, effective rate)
    of every answer; with ``announce``, each answer carries the bucket's policy (q=100, w=1) and what is left."""
    started, seen = clock(), []
    while clock() - started < seconds:
        clock.advance(max(1 / limiter.effective_rate, limiter.paused_until - clock()))
        limiter.recover()  # as acquire() does before every request
        throttled = bucket.take(clock()) > 0
        if announce:
            left, reset = bucket.left(clock())
            limiter.advise(Quota(100.0, float(reset) if left == 0 else None), sent_at=clock(), throttled=throttled)
        _answer(limiter, clock, throttled=throttled, sent_ago=0.0)
        seen.append((clock() - started, throttled, limiter.effective_rate))
    return seen


def test_the_first_cluster_of_a_full_bucket_is_told_by_few_429s() -> None:
    """A server bucket starting full (burst 5) lets the first requests through; the limit is still found after a
    handful of 429s, and the first cut lands a margin below half the rate (the server's rate is not measured yet)."""
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    seen = _against_bucket(limiter, clock, TokenBucket(rate=100.0, burst=5, now=clock()), 0.2)
    before = [t for t, throttled, rate in seen if throttled and rate == 200]
    assert limiter.limited and len(before) <= 5
    assert limiter.effective_rate == pytest.approx(97.0)


def test_a_probe_just_over_the_limit_lands_just_below_it() -> None:
    """Once limited, the 429 of a probe a little over the server's rate cuts to just below the rate the server
    accepted since the previous cut, not to half: the run stays near 100/s, with a plateau before the next probe."""
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    seen = _against_bucket(limiter, clock, TokenBucket(rate=100.0, burst=5, now=clock()), 60.0)
    later = [(throttled, rate) for t, throttled, rate in seen if t > 2.0]
    assert min(rate for _, rate in later) >= 90
    assert limiter.known_limit is not None and 95 <= limiter.known_limit <= 106
    assert sum(throttled for throttled, _ in later) <= 8  # a probe every plateau (15 s) or so


def test_an_announced_policy_is_the_ceiling_and_no_request_is_throttled() -> None:
    """With every answer announcing q=100 per second, the rate settles a margin below it at once: no 429 at all."""
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    seen = _against_bucket(limiter, clock, TokenBucket(rate=100.0, burst=5, now=clock()), 30.0, announce=True)
    assert not any(throttled for _, throttled, _ in seen)
    assert limiter.ceiling == pytest.approx(97.0) and limiter.effective_rate == pytest.approx(97.0)
    assert not limiter.limited


def test_a_ceiling_never_raises_the_rate_and_follows_the_policy() -> None:
    """A policy above ``--rate`` changes nothing; a lower one caps the rate; a higher one later lets it back up."""
    clock = FakeClock()
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep)
    limiter.advise(Quota(1000.0, None), sent_at=clock(), throttled=False)
    assert limiter.effective_rate == 50 and limiter.ceiling == 50
    limiter.advise(Quota(20.0, None), sent_at=clock(), throttled=False)
    assert limiter.effective_rate == pytest.approx(19.4)
    limiter.advise(Quota(40.0, None), sent_at=clock(), throttled=False)
    assert limiter.effective_rate == pytest.approx(38.8)


def test_a_spent_quota_holds_everyone_until_it_resets() -> None:
    """``r=0`` with ``t=3`` on a 201 holds every request 3 s; answers to requests sent before that hold began do not
    extend it, and a 429's own ``r=0`` is not taken as the account's (the pattern says that)."""
    clock = FakeClock()
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep)
    limiter.advise(Quota(None, 3.0), sent_at=clock() - 0.01, throttled=True)
    assert limiter.paused_until == 0.0
    limiter.advise(Quota(None, 3.0), sent_at=clock() - 0.01, throttled=False)
    assert limiter.paused_until == pytest.approx(clock() + 3.0)
    hold = limiter.paused_until
    clock.advance(0.5)
    limiter.advise(Quota(None, 3.0), sent_at=clock() - 0.6, throttled=False)  # sent before the hold began
    assert limiter.paused_until == hold
    limiter.advise(Quota(None, 3.0), sent_at=clock() - 0.1, throttled=False)  # sent during it: the quota is news
    assert limiter.paused_until == pytest.approx(clock() + 3.0)


def test_random_429s_that_look_limited_at_first_do_not_collapse_the_rate() -> None:
    """Four random 429s in a row trip the pattern; the 429s of the 12% noise after the pause must not halve the rate
    again before their share shows they are noise (it used to fall to 20/s in seconds): the rate comes back."""
    clock, rng = FakeClock(), random.Random(21)
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        clock.advance(0.005)
        _answer(limiter, clock, throttled=True, sent_ago=0.001)
    assert limiter.limited
    started, lowest = clock(), limiter.effective_rate
    while limiter.limited and clock() - started < 30:
        clock.advance(max(1 / limiter.effective_rate, limiter.paused_until - clock()))
        limiter.recover()
        _answer(limiter, clock, throttled=rng.random() < 0.12, sent_ago=0.002)
        lowest = min(lowest, limiter.effective_rate)
    assert not limiter.limited and limiter.effective_rate == 200
    assert lowest >= 60
