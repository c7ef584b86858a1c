"""Retry decisions as pure functions (``docs/design.md`` § Retry policy).

``classify(status)`` sorts an attempt's outcome; ``decide(...)`` says whether and how long to wait before the next
attempt; ``server_wait(headers)`` turns the server's rate-limit hints into seconds. Nothing here sleeps or does I/O,
so every row of the retry table is tested from a table.

Server hints, first match wins:
1. ``Retry-After`` — delta-seconds or an HTTP-date (RFC 9110 §10.2.3); a date is measured against the response's
   ``Date`` header, not our clock, so a skewed client clock does not stretch or cut the wait.
2. IETF ``RateLimit`` field ``t=`` (draft-ietf-httpapi-ratelimit-headers, structured form ``"policy";r=0;t=5``),
   then the older draft's ``RateLimit-Reset`` (seconds).
3. ``x-ratelimit-reset`` — seconds, or a Unix timestamp when it is too large to be a delay.
Hints are clamped to ``[0, max_server_wait]``.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from ingest.settings import default


class Outcome(enum.Enum):
    """What one attempt's HTTP status (or its absence) means for the item."""

    SUCCESS = "success"  # 201 with an asset
    THROTTLED = "throttled"  # 429: wait as told, slow the whole run
    # 5xx, 408, connection error, timeout, a redirect (never followed), any 2xx but a 201 with an asset (unknown
    # state): back off and retry with the same key
    TRANSIENT = "transient"
    CONFLICT = "conflict"  # 409: an earlier attempt with this key may be in flight
    PERMANENT = "permanent"  # 400, 404, 422 and other 4xx: this item fails, no retry
    AUTH = "auth"  # 401, 403: abort the run


CONFLICT_POLL_MAX = 5.0  # seconds: the longest wait between two attempts while the server answers 409
TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504})


def classify(status: int | None, *, has_asset: bool = True) -> Outcome:
    """Sort one attempt by its HTTP status; ``None`` means no answer arrived (timeout, connection error).

    Only a 201 that carried a valid asset (``has_asset``) is a success: any other 2xx, or a 201 without one, says
    nothing about whether the asset exists, so it is retried with the same key (the server replays if it does).
    """
    if status is None or status in TRANSIENT_STATUSES:
        return Outcome.TRANSIENT
    if status == 201 and has_asset:
        return Outcome.SUCCESS
    if 200 <= status < 400:
        return Outcome.TRANSIENT
    if status == 429:
        return Outcome.THROTTLED
    if status == 409:
        return Outcome.CONFLICT
    if status in (401, 403):
        return Outcome.AUTH
    if 500 <= status < 600:
        # 501 not_implemented and unknown 5xx: retrying will not make the server implement it.
        return Outcome.PERMANENT if status == 501 else Outcome.TRANSIENT
    return Outcome.PERMANENT


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds and backoff shape; every item gets ``max_attempts`` tries within ``max_retry_time`` seconds."""

    max_attempts: int = default("max_attempts")
    max_retry_time: float = default("max_retry_time")
    backoff_initial: float = default("backoff_initial")
    backoff_max: float = default("backoff_max")
    backoff_multiplier: float = 2.0
    # A 409 means an earlier request with the key may still be in flight (perhaps from a killed run): it is
    # retried until that request cannot be alive any more, request timeout plus a margin after the first 409.
    conflict_window: float = default("request_timeout") + default("conflict_margin")
    max_server_wait: float = default("max_server_wait")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter" after ``attempt`` failed tries (1-based).

        Half the window is fixed and half random, so the wait never collapses to zero and consumers that
        failed together spread out (AWS Architecture Blog, "Exponential Backoff And Jitter").
        """
        window = min(self.backoff_max, self.backoff_initial * self.backoff_multiplier ** (attempt - 1))
        return window / 2 + rng.uniform(0, window / 2)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an attempt: ``retry`` after ``delay`` seconds, or stop (``final``); and whether the whole
    run pauses (``pause_all`` seconds: the account is throttled, so every consumer waits, not just this item)."""

    retry: bool
    delay: float = 0.0
    reason: str = ""
    pause_all: float | None = None


def decide(
    outcome: Outcome,
    *,
    attempt: int,
    elapsed: float,
    server_wait: float | None,
    policy: RetryPolicy,
    rng: random.Random,
    conflicts: int = 0,
    conflict_elapsed: float = 0.0,
    status: int | None = None,
) -> Decision:
    """Whether to try again after ``attempt`` tries that took ``elapsed`` seconds so far.

    ``conflicts`` counts the 409 answers among them, the first of which came ``conflict_elapsed`` seconds ago:
    409s are bounded by time (``conflict_window``), not by ``max_attempts``, and are polled at most
    ``CONFLICT_POLL_MAX`` apart, so the item is replayed soon after the earlier request ends.
    ``server_wait`` is the server's hint (see
    ``server_wait``); it is preferred to our backoff for 429 and for 5xx answers that carry one (503 Retry-After).
    A 429, or a 503 with a hint, is run-wide: the decision carries ``pause_all``, the seconds every consumer waits.
    A zero hint is no hint: a server that says "retry now" to every 429 would otherwise have us hammer it.
    """
    if server_wait is not None and server_wait <= 0:
        server_wait = None  # "Retry-After: 0" says nothing about when: our own backoff, not a hammering retry
    run_wide = outcome is Outcome.THROTTLED or (server_wait is not None and status == 503)
    if run_wide and server_wait is None:
        server_wait = policy.backoff(attempt, rng)
    decision = _decide_item(
        outcome,
        attempt=attempt,
        elapsed=elapsed,
        server_wait=server_wait,
        policy=policy,
        rng=rng,
        conflicts=conflicts,
        conflict_elapsed=conflict_elapsed,
    )
    if not run_wide:
        return decision
    pause = decision.delay if decision.retry else server_wait or 0.0
    return Decision(decision.retry, decision.delay, decision.reason, pause_all=pause)


def _decide_item(
    outcome: Outcome,
    *,
    attempt: int,
    elapsed: float,
    server_wait: float | None,
    policy: RetryPolicy,
    rng: random.Random,
    conflicts: int,
    conflict_elapsed: float,
) -> Decision:
    if outcome in (Outcome.SUCCESS, Outcome.PERMANENT, Outcome.AUTH):
        return Decision(retry=False, reason=outcome.value)
    if outcome is Outcome.CONFLICT:
        if conflict_elapsed >= policy.conflict_window:
            return Decision(retry=False, reason="conflict_window_exhausted")
        # Poll, but never past the window's end: the attempt there is the replay.
        poll = min(policy.backoff(conflicts, rng), CONFLICT_POLL_MAX, policy.conflict_window - conflict_elapsed)
        delay = max(poll, server_wait or 0.0)
    elif attempt - conflicts >= policy.max_attempts:
        return Decision(retry=False, reason="attempts_exhausted")
    else:
        delay = server_wait if server_wait is not None else policy.backoff(attempt - conflicts, rng)
    if elapsed + delay > policy.max_retry_time:
        return Decision(retry=False, reason="retry_time_exhausted")
    return Decision(retry=True, delay=delay, reason=outcome.value)


_RATELIMIT_T = re.compile(r"(?:^|[;,\s])t\s*=\s*(\d+(?:\.\d+)?)")
_UNIX_TIME_THRESHOLD = 1_000_000_000  # an x-ratelimit-reset above this is an epoch timestamp, not a delay


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds == seconds and seconds >= 0 else None  # rejects NaN and negatives


def _http_date_delay(value: str, date_header: str | None, now: float) -> float | None:
    try:
        target = parsedate_to_datetime(value.strip()).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    reference = now
    if date_header:
        try:
            reference = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            reference = now
    return max(0.0, target - reference)


def parse_retry_after(value: str, *, date_header: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds: delta-seconds, or an HTTP-date measured against the response's ``Date``."""
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    return _http_date_delay(value, date_header, now)


def server_wait(headers: Mapping[str, str], *, now: float, max_wait: float) -> float | None:
    """The server's wait hint in seconds (see module docstring for the order), clamped, or ``None``.

    ``headers`` must be case-insensitive (aiohttp's ``CIMultiDictProxy`` is).
    """
    hint: float | None = None
    if (retry_after := headers.get("Retry-After")) is not None:
        hint = parse_retry_after(retry_after, date_header=headers.get("Date"), now=now)
    ratelimit = headers.get("RateLimit")
    if hint is None and ratelimit is not None and (match := _RATELIMIT_T.search(ratelimit)):
        hint = float(match.group(1))
    if hint is None and (reset := headers.get("RateLimit-Reset")) is not None:
        hint = _seconds(reset)
    if hint is None and (x_reset := headers.get("x-ratelimit-reset")) is not None:
        hint = _seconds(x_reset)
        if hint is not None and hint > _UNIX_TIME_THRESHOLD:
            hint = max(0.0, hint - now)
    if hint is None:
        return None
    return min(hint, max_wait)
