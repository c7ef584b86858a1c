"""The retry policy as pure functions: classification, decisions, backoff bounds and server hints."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from ingest.upload.retry import (
    CONFLICT_POLL_MAX,
    Decision,
    Outcome,
    RetryPolicy,
    classify,
    decide,
    parse_retry_after,
    server_wait,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, Outcome.SUCCESS),
        (429, Outcome.THROTTLED),
        (500, Outcome.TRANSIENT),
        (502, Outcome.TRANSIENT),
        (503, Outcome.TRANSIENT),
        (504, Outcome.TRANSIENT),
        (None, Outcome.TRANSIENT),
        (409, Outcome.CONFLICT),
        (400, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
        (422, Outcome.PERMANENT),
        (501, Outcome.PERMANENT),
        (401, Outcome.AUTH),
        (403, Outcome.AUTH),
    ],
)
def test_classify_matches_design_table(status: int | None, outcome: Outcome) -> None:
    """Each status of docs/design.md's retry table maps to its action."""
    assert classify(status) is outcome


@pytest.mark.parametrize("outcome", [Outcome.SUCCESS, Outcome.PERMANENT, Outcome.AUTH])
def test_final_outcomes_never_retry(outcome: Outcome) -> None:
    """Success, permanent failures and auth rejections are final."""
    decision = decide(outcome, attempt=1, elapsed=0, server_wait=None, policy=RetryPolicy(), rng=random.Random(1))
    assert not decision.retry


def test_attempts_are_bounded() -> None:
    """Transient failures retry until max_attempts, then stop with the reason."""
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(1)
    assert decide(Outcome.TRANSIENT, attempt=2, elapsed=0, server_wait=None, policy=policy, rng=rng).retry
    final = decide(Outcome.TRANSIENT, attempt=3, elapsed=0, server_wait=None, policy=policy, rng=rng)
    assert not final.retry and final.reason == "attempts_exhausted"


def test_conflicts_are_bounded_by_time_not_attempts() -> None:
    """409s are retried until ``conflict_window`` seconds after the first one, whatever ``max_attempts`` says, and
    polled no further apart than ``CONFLICT_POLL_MAX`` nor past the window's end (the attempt there is the replay)."""
    policy = RetryPolicy(max_attempts=3, conflict_window=70.0)
    rng = random.Random(1)

    def conflict(attempt: int, conflicts: int, since: float) -> Decision:
        return decide(
            Outcome.CONFLICT, attempt=attempt, elapsed=since, server_wait=None, policy=policy, rng=rng,
            conflicts=conflicts, conflict_elapsed=since,
        )  # fmt: skip

    assert conflict(attempt=20, conflicts=20, since=30.0).retry
    assert all(conflict(n, n, 0.0).delay <= CONFLICT_POLL_MAX for n in range(1, 30))
    assert conflict(attempt=20, conflicts=20, since=69.0).delay <= 1.0
    final = conflict(attempt=21, conflicts=21, since=70.0)
    assert not final.retry and final.reason == "conflict_window_exhausted"
    # The attempts spent on 409s do not count against max_attempts for a later 5xx.
    assert decide(
        Outcome.TRANSIENT, attempt=12, elapsed=1, server_wait=None, policy=policy, rng=rng, conflicts=10
    ).retry


def test_total_retry_time_is_bounded() -> None:
    """A retry whose wait would pass max_retry_time is not made."""
    policy = RetryPolicy(max_retry_time=10)
    decision = decide(Outcome.THROTTLED, attempt=1, elapsed=8, server_wait=5, policy=policy, rng=random.Random())
    assert not decision.retry and decision.reason == "retry_time_exhausted"


def test_server_wait_beats_backoff() -> None:
    """A server hint is used as the delay instead of our own backoff."""
    decision = decide(Outcome.THROTTLED, attempt=1, elapsed=0, server_wait=7, policy=RetryPolicy(), rng=random.Random())
    assert decision.retry and decision.delay == 7


@given(attempt=st.integers(min_value=1, max_value=60), seed=st.integers())
def test_backoff_within_bounds(attempt: int, seed: int) -> None:
    """Backoff with equal jitter stays within [window/2, window] and never exceeds backoff_max."""
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=30)
    delay = policy.backoff(attempt, random.Random(seed))
    window = min(30, 0.5 * 2 ** (attempt - 1))
    assert window / 2 <= delay <= window <= 30


def _headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict({name.replace("_", "-"): value for name, value in values.items()})


def test_retry_after_seconds() -> None:
    """Retry-After delta-seconds is taken as is."""
    assert server_wait(_headers(Retry_After="3"), now=NOW, max_wait=300) == 3


def test_retry_after_http_date_measured_against_date_header() -> None:
    """An HTTP-date Retry-After is measured from the response's Date, so client clock skew does not matter."""
    server_now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    headers = _headers(
        Retry_After=format_datetime(server_now + timedelta(seconds=5), usegmt=True),
        Date=format_datetime(server_now, usegmt=True),
    )
    skewed_client_clock = server_now.timestamp() + 3600  # an hour ahead
    assert server_wait(headers, now=skewed_client_clock, max_wait=300) == pytest.approx(5)


def test_retry_after_http_date_without_date_header_uses_our_clock() -> None:
    """Without a Date header the HTTP-date is measured against our clock."""
    target = datetime.fromtimestamp(NOW + 4, tz=UTC)
    assert parse_retry_after(format_datetime(target, usegmt=True), date_header=None, now=NOW) == pytest.approx(4)


def test_hint_order_and_forms() -> None:
    """Retry-After beats RateLimit t=, which beats RateLimit-Reset, which beats x-ratelimit-reset."""
    assert server_wait(_headers(Retry_After="2", RateLimit='"d";r=0;t=9'), now=NOW, max_wait=300) == 2
    assert server_wait(_headers(RateLimit='"default";r=0;t=9', RateLimit_Reset="4"), now=NOW, max_wait=300) == 9
    assert server_wait(_headers(RateLimit_Reset="4", x_ratelimit_reset="6"), now=NOW, max_wait=300) == 4
    assert server_wait(_headers(x_ratelimit_reset="6"), now=NOW, max_wait=300) == 6


def test_x_ratelimit_reset_epoch_timestamp() -> None:
    """An x-ratelimit-reset that is a Unix timestamp is turned into a delay."""
    assert server_wait(_headers(x_ratelimit_reset=str(int(NOW) + 8)), now=NOW, max_wait=300) == pytest.approx(8)


def test_hints_are_clamped_and_garbage_ignored() -> None:
    """A huge hint is clamped; a negative or unparsable one is ignored; no hint gives None."""
    assert server_wait(_headers(Retry_After="999999"), now=NOW, max_wait=120) == 120
    assert server_wait(_headers(Retry_After="-5"), now=NOW, max_wait=120) is None
    assert server_wait(_headers(Retry_After="soon"), now=NOW, max_wait=120) is None
    assert server_wait(_headers(Retry_After="nan"), now=NOW, max_wait=120) is None
    assert server_wait(_headers(), now=NOW, max_wait=120) is None


def test_past_http_date_means_no_wait() -> None:
    """A Retry-After date in the past means retry now, not a negative sleep."""
    past = format_datetime(datetime.fromtimestamp(NOW - 50, tz=UTC), usegmt=True)
    assert server_wait(_headers(Retry_After=past), now=NOW, max_wait=120) == 0
